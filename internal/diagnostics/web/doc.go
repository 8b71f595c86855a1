// Package web is fcgiscope's admin HTTP endpoint: Prometheus metrics,
// liveness and readiness probes, a JSON API over the most recent requests,
// a stream of new requests as Server-Sent Events, and a dashboard for the
// person looking at an incident.
//
// A Recorder is the diagnostics.Sink that feeds it: it counts every finished
// request into Prometheus metrics, keeps a summary of the most recent ones in
// a fixed-size ring, and hands each summary to the dashboards that are
// watching. A Handler serves all of it over HTTP.
//
//	rec := &web.Recorder{Size: 1000}
//	explainer := &diagnostics.Explainer{Classifier: c, Sinks: []diagnostics.Sink{accessLog, rec}}
//	srv := &proxy.Server{..., Responder: explainer, Observer: explainer}
//	admin := &web.Handler{Recorder: rec, Upstream: upstream, Token: token}
//	ln, _ := net.Listen("tcp", "127.0.0.1:9180")
//	go admin.Serve(ctx, ln)
//
// The dashboard is plain HTML, CSS and JavaScript embedded in the binary: it
// works offline and needs no build step.
package web
