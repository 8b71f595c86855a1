package promcheck

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// The files checked, relative to this directory.
var (
	rulesFile     = filepath.Join("..", "..", "examples", "prometheus", "fcgiscope-alerts.yml")
	dashboardFile = filepath.Join("..", "..", "examples", "grafana", "fcgiscope-dashboard.json")
)

// dsVariable is the dashboard's data source variable, which every panel
// and query must use so that the dashboard imports into any Grafana.
const dsVariable = "${DS_PROMETHEUS}"

// severities are the severity labels the alerts may carry.
var severities = map[string]bool{"critical": true, "warning": true, "info": true}

func TestExportedCatalog(t *testing.T) {
	cat := exported(t)
	// A few names the files depend on, so that a broken exported()
	// fails here rather than as a flood of unknown metrics.
	for _, n := range []string{
		"fcgiscope_requests_total", "fcgiscope_request_duration_seconds_bucket",
		"fcgiscope_requests_in_flight", "fcgiscope_requests_queued",
		"fcgiscope_fpm_processes", "fcgiscope_fpm_status_polls_total",
		"fcgiscope_fpm_log_events_total", "fcgiscope_upstream_dial_errors_total",
	} {
		if cat[n] == nil {
			t.Errorf("%s is not in the catalog; exported() no longer makes fcgiscope export it", n)
		}
	}
	if cat["fcgiscope_request_duration_seconds"] != nil {
		t.Error("a classic histogram's own name is in the catalog; only its _bucket, _sum and _count are series")
	}
	t.Logf("fcgiscope exports %d series names: %s", len(cat), strings.Join(cat.names(), " "))
}

func TestAlertRules(t *testing.T) {
	c := newChecker(exported(t).withUp())
	rgs, errs := rulefmt.ParseFile(rulesFile, false, model.UTF8Validation, c.parser, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	seen := map[string]bool{}
	alerts := 0
	for _, g := range rgs.Groups {
		for _, r := range g.Rules {
			name := r.Alert
			if name == "" {
				name = "record " + r.Record
			} else {
				alerts++
				if seen[name] {
					t.Errorf("group %s: alert %s is defined twice", g.Name, name)
				}
				seen[name] = true
			}
			report := func(format string, args ...any) {
				t.Errorf("group %s, %s: %s", g.Name, name, fmt.Sprintf(format, args...))
			}
			e, err := c.parse(r.Expr)
			if err != nil {
				report("expr: %v", err)
				continue
			}
			names, problems := c.selectors(e)
			for _, p := range problems {
				report("expr: %s", p)
			}
			if r.Alert == "" {
				continue
			}
			if sev := r.Labels["severity"]; !severities[sev] {
				report("labels.severity is %q, want one of critical, warning, info", sev)
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					report("annotations.%s is missing", a)
				}
			}
			out := c.outputLabels(e)
			for k, v := range r.Annotations {
				for _, p := range c.templateProblems(v, out, names) {
					report("annotations.%s %s", k, p)
				}
			}
			for k, v := range r.Labels {
				for _, p := range c.templateProblems(v, out, names) {
					report("labels.%s %s", k, p)
				}
			}
		}
	}
	if alerts == 0 {
		t.Errorf("%s has no alerts", rulesFile)
	}
}

// panel is the part of a Grafana panel the checks read.
type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    *gridPos       `json:"gridPos"`
	Targets    []target       `json:"targets"`
	Panels     []panel        `json:"panels"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type gridPos struct {
	H, W, X, Y int
}

type target struct {
	RefID        string         `json:"refId"`
	Expr         string         `json:"expr"`
	LegendFormat string         `json:"legendFormat"`
	Exemplar     bool           `json:"exemplar"`
	Datasource   *datasourceRef `json:"datasource"`
}

type dashboard struct {
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// labelValuesQuery matches Grafana's label_values(selector, label).
var labelValuesQuery = regexp.MustCompile(`^\s*label_values\((.+),\s*(\w+)\s*\)\s*$`)

func loadDashboard(t *testing.T) *dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return &d
}

func TestDashboard(t *testing.T) {
	c := newChecker(exported(t).withUp())
	d := loadDashboard(t)
	if d.Title == "" || d.UID == "" {
		t.Errorf("the dashboard needs a title and a uid (has %q, %q)", d.Title, d.UID)
	}
	// Grafana 10 and 11 read schema 36 and later without migrating the
	// data source references.
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion is %d, want 36 or later (Grafana 10/11)", d.SchemaVersion)
	}

	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type != "query" {
			continue
		}
		var q string
		if json.Unmarshal(v.Query, &q) != nil {
			var obj struct{ Query string }
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				t.Errorf("variable %s: query: %v", v.Name, err)
				continue
			}
			q = obj.Query
		}
		m := labelValuesQuery.FindStringSubmatch(q)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label), which this test knows how to check", v.Name, q)
			continue
		}
		e, err := c.parse(substitute(m[1]))
		if err != nil {
			t.Errorf("variable %s: %q: %v", v.Name, m[1], err)
			continue
		}
		_, problems := c.selectors(e)
		for _, p := range problems {
			t.Errorf("variable %s: %s", v.Name, p)
		}
		if out := c.outputLabels(e); out != nil && !out[m[2]] {
			t.Errorf("variable %s: %s has no label %q", v.Name, m[1], m[2])
		}
	}
	if vars["DS_PROMETHEUS"] != "datasource" {
		t.Errorf("the dashboard needs a data source variable DS_PROMETHEUS, has %v", vars)
	}
	for _, v := range []string{"job", "instance"} {
		if vars[v] != "query" {
			t.Errorf("the dashboard needs a query variable %s", v)
		}
	}

	ids := map[int]string{}
	queries := 0
	var walk func(ps []panel, in string)
	walk = func(ps []panel, in string) {
		for _, p := range ps {
			where := fmt.Sprintf("panel %d %q%s", p.ID, p.Title, in)
			if strings.TrimSpace(p.Title) == "" {
				t.Errorf("%s has no title", where)
			}
			if prev, ok := ids[p.ID]; ok || p.ID == 0 {
				t.Errorf("%s: id %d is missing or also used by %q", where, p.ID, prev)
			}
			ids[p.ID] = p.Title
			if g := p.GridPos; g == nil || g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
				t.Errorf("%s: gridPos %+v does not fit the 24 columns", where, p.GridPos)
			}
			if p.Type == "row" {
				walk(p.Panels, fmt.Sprintf(" in row %q", p.Title))
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != dsVariable {
				t.Errorf("%s: datasource is %+v, want uid %s", where, p.Datasource, dsVariable)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s has no queries", where)
			}
			for _, tg := range p.Targets {
				queries++
				tw := fmt.Sprintf("%s, query %s", where, tg.RefID)
				if tg.Datasource == nil || tg.Datasource.UID != dsVariable {
					t.Errorf("%s: datasource is %+v, want uid %s", tw, tg.Datasource, dsVariable)
				}
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s has no expr", tw)
					continue
				}
				e, err := c.parse(substitute(tg.Expr))
				if err != nil {
					t.Errorf("%s: %q: %v", tw, tg.Expr, err)
					continue
				}
				names, problems := c.selectors(e)
				for _, pr := range problems {
					t.Errorf("%s: %s", tw, pr)
				}
				for _, pr := range legendProblems(tg.LegendFormat, c.outputLabels(e)) {
					t.Errorf("%s: %s", tw, pr)
				}
				if p.Type == "timeseries" && c.histogramBuckets(names) && !tg.Exemplar {
					t.Errorf("%s: a latency graph without \"exemplar\": true; fcgiscope attaches trace ids to its histograms", tw)
				}
			}
		}
	}
	walk(d.Panels, "")
	if queries == 0 {
		t.Errorf("%s has no queries", dashboardFile)
	}
}

// TestCheckerCatchesMistakes feeds the checks the mistakes they are there
// to catch, so that a checker that passes everything does not go unseen.
func TestCheckerCatchesMistakes(t *testing.T) {
	c := newChecker(exported(t).withUp())
	for _, tc := range []struct {
		expr, template, legend string
		want                   string
	}{
		{expr: `rate(fcgiscope_request_totl[5m])`, want: "fcgiscope_request_totl is not exported by fcgiscope; did you mean fcgiscope_requests_total"},
		{expr: `rate(fcgiscope_request_duration_seconds[5m])`, want: "classic histogram"},
		{expr: `fcgiscope_worker_deaths_total{reason="worker_crashed"}`, want: `has no label "reason"`},
		{expr: `fcgiscope_worker_deaths_total{cause="worker_oomkilled"}`, want: `never has the value "worker_oomkilled"`},
		{expr: `fcgiscope_requests_total{outcome=~"upstream_refused|upstream_refsued"}`, want: `never has the value "upstream_refsued"`},
		{expr: `fcgiscope_fpm_processes{state="busy"}`, want: `never has the value "busy"`},
		{expr: `{__name__=~"fcgiscope_.*"}`, want: "selects no single metric name"},
		{expr: `sum by (job) (fcgiscope_requests_queued) > 0`, template: `{{ $labels.instance }}`, want: `no label "instance"`},
		{expr: `fcgiscope_requests_queued > on (job, instance) fcgiscope_fpm_processes_total`, template: `{{ $labels.state }}`, want: `no label "state"`},
		{expr: `sum by (outcome) (rate(fcgiscope_requests_total[5m]))`, template: `{{ if eq $labels.outcome "php_fatal" }}x{{ end }}`, want: `compares $labels.outcome with "php_fatal"`},
		{expr: `sum by (cause) (rate(fcgiscope_worker_deaths_total[5m]))`, legend: `{{outcome}}`, want: `legend prints {{outcome}}`},
	} {
		e, err := c.parse(substitute(tc.expr))
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		names, problems := c.selectors(e)
		out := c.outputLabels(e)
		problems = append(problems, c.templateProblems(tc.template, out, names)...)
		problems = append(problems, legendProblems(tc.legend, out)...)
		if !strings.Contains(strings.Join(problems, "\n"), tc.want) {
			t.Errorf("%s %s%s: problems %q, want one saying %q", tc.expr, tc.template, tc.legend, problems, tc.want)
		}
	}

	// And what is right passes.
	for _, expr := range []string{
		`up{job=~"$job"} == 0`,
		`histogram_quantile(0.95, sum by (le) (rate(fcgiscope_queue_wait_seconds_bucket{instance=~"${instance:regex}"}[$__rate_interval])))`,
		`sum by (outcome) (rate(fcgiscope_requests_total{outcome=~"ok|queue_timeout", status_class="5xx"}[$__interval]))`,
		`go_goroutines`,
	} {
		e, err := c.parse(substitute(expr))
		if err != nil {
			t.Errorf("%s: %v", expr, err)
			continue
		}
		if _, problems := c.selectors(e); len(problems) > 0 {
			t.Errorf("%s: %q, want none", expr, problems)
		}
	}
}

func TestSubstitute(t *testing.T) {
	for in, want := range map[string]string{
		`rate(x{job=~"$job"}[$__rate_interval])`:                `rate(x{job=~"grafana_variable"}[5m])`,
		`rate(x{instance=~"${instance:regex}"}[${__interval}])`: `rate(x{instance=~"grafana_variable"}[5m])`,
		`x{a="[[a]]"} * $__range_s`:                             `x{a="grafana_variable"} * 300`,
	} {
		if got := substitute(in); got != want {
			t.Errorf("substitute(%q) = %q, want %q", in, got, want)
		}
	}
	if _, err := parser.NewParser(parser.Options{}).ParseExpr(substitute(`sum by ($by) (x)`)); err != nil {
		t.Errorf("a variable in a grouping does not parse after substitution: %v", err)
	}
}
