package promcheck

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/rules"
)

// alertCase is a history of series and the alerts of one rule that must
// fire at its end, as promtool's rule unit tests have them.
type alertCase struct {
	name  string
	alert string
	// load is a promqltest load block: series sampled every minute
	// from time 0.
	load string
	// at is when the alerts are checked; the rule is evaluated every
	// minute up to it.
	at time.Duration
	// firing are the alerts that must fire, each by the labels that
	// tell it from the others; no other alert of the rule may fire.
	firing []map[string]string
	// summary is a phrase each firing alert's summary must have.
	summary string
}

// a1 and a2 are two fcgiscope targets; a1 is the one in trouble.
const (
	a1 = `job="fcgiscope", instance="a1:9180"`
	a2 = `job="fcgiscope", instance="a2:9180"`
)

var alertCases = []alertCase{
	{
		name: "an fcgiscope stops answering scrapes; another job's target is down too", alert: "FcgiscopeDown",
		load: `
			up{` + a1 + `} 1 1 1 0 0 0 0 0
			fcgiscope_build_info{` + a1 + `, version="1.0", commit="abc", goversion="go1.26"} 1 1 1 stale
			up{` + a2 + `} 1x7
			fcgiscope_build_info{` + a2 + `, version="1.0", commit="abc", goversion="go1.26"} 1x7
			up{job="node", instance="n1:9100"} 0x7`,
		at:      7 * time.Minute,
		firing:  []map[string]string{{"instance": "a1:9180"}},
		summary: "fcgiscope a1:9180 cannot be scraped",
	},
	{
		name: "no fcgiscope is scraped at all", alert: "FcgiscopeAbsent",
		load:    `up{job="node", instance="n1:9100"} 1x20`,
		at:      16 * time.Minute,
		firing:  []map[string]string{{}},
		summary: "No fcgiscope is scraped",
	},
	{
		name: "php-fpm's socket disappears", alert: "PhpFpmDown",
		load: `
			fcgiscope_requests_total{` + a1 + `, outcome="upstream_socket_missing", status_class="5xx"} 0 0 0 0+20x8
			fcgiscope_requests_total{` + a1 + `, outcome="ok", status_class="2xx"} 0+100x3 300x8
			fcgiscope_requests_total{` + a2 + `, outcome="ok", status_class="2xx"} 0+100x11`,
		at:      10 * time.Minute,
		firing:  []map[string]string{{"instance": "a1:9180", "outcome": "upstream_socket_missing"}},
		summary: "its socket file is gone",
	},
	{
		name: "php-fpm was killed and left its socket", alert: "PhpFpmDown",
		load:    `fcgiscope_requests_total{` + a1 + `, outcome="upstream_socket_stale", status_class="5xx"} 0+20x10`,
		at:      10 * time.Minute,
		firing:  []map[string]string{{"instance": "a1:9180", "outcome": "upstream_socket_stale"}},
		summary: "nobody accepts, php-fpm was killed",
	},
	{
		name: "php-fpm's status page went quiet", alert: "PhpFpmStatusStale",
		load: `
			fcgiscope_fpm_status_age_seconds{` + a1 + `} 1 1 1 60 120 180 240 300
			fcgiscope_fpm_status_age_seconds{` + a2 + `} 1x7`,
		at:      7 * time.Minute,
		firing:  []map[string]string{{"instance": "a1:9180"}},
		summary: "has not answered for 5m",
	},
	{
		name: "fcgiscope polls a status path php-fpm does not serve", alert: "PhpFpmStatusNeverAnswered",
		load: `
			fcgiscope_fpm_status_polls_total{` + a1 + `} 0+30x15
			fcgiscope_fpm_status_polls_total{` + a2 + `} 0+30x15
			fcgiscope_fpm_processes_total{` + a2 + `} 5x15`,
		at:      12 * time.Minute,
		firing:  []map[string]string{{"instance": "a1:9180"}},
		summary: "check pm.status_path",
	},
	{
		name: "the pool hits pm.max_children", alert: "PhpFpmMaxChildrenReached",
		load: `
			fcgiscope_fpm_max_children_reached_total{` + a1 + `} 3 3 3 3 5 5 6
			fcgiscope_fpm_max_children_reached_total{` + a2 + `} 3x6`,
		at:      6 * time.Minute,
		firing:  []map[string]string{{"instance": "a1:9180"}},
		summary: "ran out of workers (3 times in 10 min): raise pm.max_children",
	},
	{
		name: "every worker is busy on one pool; an idle ondemand pool and a half-busy one stay quiet", alert: "PhpFpmAllWorkersBusy",
		load: `
			fcgiscope_fpm_processes{` + a1 + `, state="active"} 4x15
			fcgiscope_fpm_processes{` + a1 + `, state="idle"} 1x15
			fcgiscope_fpm_processes_total{` + a1 + `} 5x15
			fcgiscope_fpm_processes{` + a2 + `, state="active"} 0x15
			fcgiscope_fpm_processes{` + a2 + `, state="idle"} 1x15
			fcgiscope_fpm_processes_total{` + a2 + `} 1x15
			fcgiscope_fpm_processes{job="fcgiscope", instance="a3:9180", state="active"} 2x15
			fcgiscope_fpm_processes{job="fcgiscope", instance="a3:9180", state="idle"} 3x15
			fcgiscope_fpm_processes_total{job="fcgiscope", instance="a3:9180"} 5x15`,
		at:      12 * time.Minute,
		firing:  []map[string]string{{"instance": "a1:9180", "state": "active"}},
		summary: "has been busy for 10 min (4 active)",
	},
	{
		name: "connections wait in php-fpm's listen queue", alert: "PhpFpmListenQueue",
		load: `
			fcgiscope_fpm_listen_queue{` + a1 + `} 0 0 3 7 9 12
			fcgiscope_fpm_listen_queue{` + a2 + `} 0x5`,
		at:      5 * time.Minute,
		firing:  []map[string]string{{"instance": "a1:9180"}},
		summary: "12 connections wait",
	},
	{
		name: "requests queue in fcgiscope", alert: "FcgiscopeRequestsQueued",
		load: `
			fcgiscope_requests_queued{` + a1 + `} 0 4 6 3 8 2 5 9
			fcgiscope_requests_queued{` + a2 + `} 0 4 0 3 0 2 0 9`,
		at:      7 * time.Minute,
		firing:  []map[string]string{{"instance": "a1:9180"}},
		summary: "(9 now)",
	},
	{
		name: "queued requests wait two seconds", alert: "FcgiscopeQueueWaitHigh",
		load: `
			fcgiscope_queue_wait_seconds_bucket{` + a1 + `, le="0.5"} 0x20
			fcgiscope_queue_wait_seconds_bucket{` + a1 + `, le="1"} 0x20
			fcgiscope_queue_wait_seconds_bucket{` + a1 + `, le="2.5"} 0+60x20
			fcgiscope_queue_wait_seconds_bucket{` + a1 + `, le="+Inf"} 0+60x20
			fcgiscope_queue_wait_seconds_bucket{` + a2 + `, le="0.5"} 0+60x20
			fcgiscope_queue_wait_seconds_bucket{` + a2 + `, le="1"} 0+60x20
			fcgiscope_queue_wait_seconds_bucket{` + a2 + `, le="2.5"} 0+60x20
			fcgiscope_queue_wait_seconds_bucket{` + a2 + `, le="+Inf"} 0+60x20`,
		at:      20 * time.Minute,
		firing:  []map[string]string{{"instance": "a1:9180"}},
		summary: "wait 2.425s (p95)",
	},
	{
		name: "request_terminate_timeout kills workers", alert: "PhpFpmRequestTerminateTimeout",
		load: `
			fcgiscope_worker_deaths_total{` + a1 + `, cause="worker_timeout_killed"} 0 0 1 2 2 4
			fcgiscope_worker_deaths_total{` + a1 + `, cause="worker_crashed"} 0x5
			fcgiscope_worker_deaths_total{` + a2 + `, cause="worker_timeout_killed"} 0x5`,
		at:      5 * time.Minute,
		firing:  []map[string]string{{"instance": "a1:9180"}},
		summary: "killed 4 workers at request_terminate_timeout",
	},
	{
		name: "workers crash; timeouts are another alert's", alert: "PhpFpmWorkersDying",
		load: `
			fcgiscope_worker_deaths_total{` + a1 + `, cause="worker_crashed"} 0 0 1 1 3
			fcgiscope_worker_deaths_total{` + a1 + `, cause="worker_died"} 0x4
			fcgiscope_worker_deaths_total{` + a1 + `, cause="worker_timeout_killed"} 0 0 1 1 3`,
		at:      4 * time.Minute,
		firing:  []map[string]string{{"instance": "a1:9180", "cause": "worker_crashed"}},
		summary: "a signal killed them",
	},
	{
		name: "workers die without evidence", alert: "PhpFpmWorkersDying",
		load:    `fcgiscope_worker_deaths_total{` + a1 + `, cause="worker_died"} 0 0 1 1 3`,
		at:      4 * time.Minute,
		firing:  []map[string]string{{"instance": "a1:9180", "cause": "worker_died"}},
		summary: "give fcgiscope the pool config and error log",
	},
	{
		name: "the OOM killer kills workers", alert: "PhpFpmWorkerOOMKilled",
		load: `
			fcgiscope_requests_total{` + a1 + `, outcome="worker_oom_killed", status_class="5xx"} 0 0 0 2 2
			fcgiscope_requests_total{` + a2 + `, outcome="ok", status_class="2xx"} 0+10x4`,
		at:      4 * time.Minute,
		firing:  []map[string]string{{"instance": "a1:9180"}},
		summary: "lower pm.max_children or memory_limit",
	},
	{
		name: "queue timeouts pass 5%; client aborts and a quiet instance do not count", alert: "FcgiscopeErrorRatioHigh",
		load: `
			fcgiscope_requests_total{` + a1 + `, outcome="ok", status_class="2xx"} 0+300x15
			fcgiscope_requests_total{` + a1 + `, outcome="queue_timeout", status_class="5xx"} 0+60x15
			fcgiscope_requests_total{` + a1 + `, outcome="client_aborted", status_class="4xx"} 0+120x15
			fcgiscope_requests_total{` + a1 + `, outcome="php_fatal_error", status_class="5xx"} 0+1x15
			fcgiscope_requests_total{` + a2 + `, outcome="ok", status_class="2xx"} 0+1x15
			fcgiscope_requests_total{` + a2 + `, outcome="queue_timeout", status_class="5xx"} 0+1x15`,
		at:      12 * time.Minute,
		firing:  []map[string]string{{"instance": "a1:9180", "outcome": "queue_timeout"}},
		summary: "12.47% of requests behind a1:9180 fail with queue_timeout: no php-fpm worker became free within FCGISCOPE_QUEUE_TIMEOUT",
	},
	{
		name: "php-fpm's slowlog catches requests", alert: "PhpFpmSlowRequests",
		load: `
			fcgiscope_fpm_slow_requests_total{` + a1 + `} 7 7 8 9
			fcgiscope_fpm_slow_requests_total{` + a2 + `} 7 7 7 7`,
		at:      3 * time.Minute,
		firing:  []map[string]string{{"instance": "a1:9180"}},
		summary: "caught 2 requests",
	},
}

// TestAlertsFire evaluates the alerting rules over made-up histories with
// Prometheus's own rule engine: each alert must fire when its trouble
// happens, for the series in trouble only, with a summary that reads.
func TestAlertsFire(t *testing.T) {
	p := parser.NewParser(parser.Options{})
	rgs, errs := rulefmt.ParseFile(rulesFile, false, model.UTF8Validation, p, slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatalf("%s: %v", rulesFile, errs)
	}
	byName := map[string]rulefmt.Rule{}
	for _, g := range rgs.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				byName[r.Alert] = r
			}
		}
	}
	tested := map[string]bool{}
	for _, tc := range alertCases {
		tested[tc.alert] = true
		t.Run(tc.alert+"/"+tc.name, func(t *testing.T) {
			r, ok := byName[tc.alert]
			if !ok {
				t.Fatalf("no alert %s in %s", tc.alert, rulesFile)
			}
			fired := evalAlert(t, p, r, tc.load, tc.at)
			var got []map[string]string
			for _, a := range fired {
				got = append(got, a.Labels.Map())
				s := a.Annotations.Get("summary")
				if !strings.Contains(s, tc.summary) {
					t.Errorf("summary %q does not say %q", s, tc.summary)
				}
				a.Annotations.Range(func(an labels.Label) {
					if strings.Contains(an.Value, "<no value>") || strings.Contains(an.Value, "  ") {
						t.Errorf("annotations.%s has an empty value in it: %q", an.Name, an.Value)
					}
				})
				t.Logf("%s: %s", a.Labels, s)
			}
			if !sameAlerts(got, tc.firing) {
				t.Errorf("firing: %v, want alerts with %v", got, tc.firing)
			}
		})
	}
	for name := range byName {
		if !tested[name] {
			t.Errorf("alert %s has no case in alertCases that makes it fire", name)
		}
	}
}

// evalAlert evaluates rule r every minute from 0 to at over the series of
// load and returns the alerts firing at the end.
func evalAlert(t *testing.T, p parser.Parser, r rulefmt.Rule, load string, at time.Duration) []*rules.Alert {
	t.Helper()
	storage := promqltest.LoadedStorage(t, "load 1m\n"+indent(load))
	engine := promqltest.NewTestEngine(t, false, 0, promqltest.DefaultMaxSamplesPerQuery)
	expr, err := p.ParseExpr(r.Expr)
	if err != nil {
		t.Fatal(err)
	}
	rule := rules.NewAlertingRule(r.Alert, expr, time.Duration(r.For), time.Duration(r.KeepFiringFor),
		labels.FromMap(r.Labels), labels.FromMap(r.Annotations), labels.EmptyLabels(), "", false,
		slog.New(slog.DiscardHandler))
	query := rules.EngineQueryFunc(engine, storage)
	for ts := time.Duration(0); ts <= at; ts += time.Minute {
		if _, err := rule.Eval(context.Background(), 0, time.Unix(0, 0).Add(ts), query, nil, 0); err != nil {
			t.Fatalf("evaluating %s at %s: %v", r.Alert, ts, err)
		}
	}
	var firing []*rules.Alert
	for _, a := range rule.ActiveAlerts() {
		if a.State == rules.StateFiring {
			firing = append(firing, a)
		}
	}
	return firing
}

// sameAlerts reports whether got and want pair up: each alert of got has
// the labels of its own entry of want.
func sameAlerts(got, want []map[string]string) bool {
	if len(got) != len(want) {
		return false
	}
	used := make([]bool, len(got))
next:
	for _, w := range want {
		for i, g := range got {
			if !used[i] && hasLabels(g, w) {
				used[i] = true
				continue next
			}
		}
		return false
	}
	return true
}

// hasLabels reports whether every label of want is in got, with its value.
func hasLabels(got, want map[string]string) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// indent trims every line of s and indents the non-empty ones by two
// spaces, as a load block wants its series.
func indent(s string) string {
	var b strings.Builder
	for l := range strings.SplitSeq(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			b.WriteString("  " + l + "\n")
		}
	}
	return b.String()
}
