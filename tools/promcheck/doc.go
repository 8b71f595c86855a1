// Package promcheck holds no code: its tests check the example Prometheus
// alerting rules (examples/prometheus) and Grafana dashboard
// (examples/grafana) against the metrics fcgiscope exports. It is a module
// of its own so that the Prometheus server packages the checks parse with
// stay out of fcgiscope's go.mod.
//
// The tests load the rules with rulefmt, parse every PromQL expression of
// both files, and check that every metric, label and label value they
// select is one a fcgiscope Recorder registers, that every label a
// template or legend prints survives the expression, and that every alert
// and panel says what it is about.
package promcheck
