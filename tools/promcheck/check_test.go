package promcheck

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// checker checks PromQL expressions against the series fcgiscope exports.
type checker struct {
	cat    catalog
	parser parser.Parser
}

func newChecker(cat catalog) *checker {
	return &checker{cat: cat, parser: parser.NewParser(parser.Options{})}
}

// grafanaMarker stands in for a Grafana variable whose value is not known:
// it is a valid metric name, label name and label value, and label values
// holding it are not checked.
const grafanaMarker = "grafana_variable"

// grafanaVariable matches $var, ${var}, ${var:format} and [[var]].
var grafanaVariable = regexp.MustCompile(`\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]`)

// substitute replaces Grafana's variables in a query with valid PromQL:
// its interval variables with a duration or a number, the others with
// grafanaMarker.
func substitute(q string) string {
	return grafanaVariable.ReplaceAllStringFunc(q, func(v string) string {
		m := grafanaVariable.FindStringSubmatch(v)
		switch m[1] + m[2] + m[3] {
		case "__interval", "__rate_interval", "__range", "__auto", "__auto_interval":
			return "5m"
		case "__interval_ms", "__range_ms":
			return "300000"
		case "__range_s":
			return "300"
		}
		return grafanaMarker
	})
}

// parse parses a PromQL expression.
func (c *checker) parse(expr string) (parser.Expr, error) {
	return c.parser.ParseExpr(expr)
}

// selectors checks every vector selector of e: that it names a series
// fcgiscope exports, and that its matchers use the series' labels and, for
// labels with a closed set of values, values they can take. It returns the
// metric names selected and the problems found.
func (c *checker) selectors(e parser.Expr) (names []string, problems []string) {
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := metricName(vs)
		if name == "" {
			problems = append(problems, fmt.Sprintf("%s selects no single metric name, so it cannot be checked", vs))
			return nil
		}
		names = append(names, name)
		s := c.cat[name]
		if s == nil {
			problems = append(problems, fmt.Sprintf("metric %s is not exported by fcgiscope%s", name, c.hint(name)))
			return nil
		}
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel || slices.Contains(targetLabels, m.Name) {
				continue
			}
			if !s.labels[m.Name] {
				problems = append(problems, fmt.Sprintf("%s: metric %s has no label %q (its labels: %s)",
					vs, name, m.Name, strings.Join(sortedKeys(s.labels), ", ")))
				continue
			}
			allowed := s.values[m.Name]
			if allowed == nil {
				continue
			}
			for _, v := range literalValues(m) {
				if !allowed[v] {
					problems = append(problems, fmt.Sprintf("%s: %s{%s} never has the value %q (it has: %s)",
						vs, name, m.Name, v, strings.Join(sortedKeys(allowed), ", ")))
				}
			}
		}
		return nil
	})
	return names, problems
}

// metricName returns the metric name a selector selects, or "" when it
// selects none in particular.
func metricName(vs *parser.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

// literalName matches a label value that is a plain word.
var literalName = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// literalValues returns the values a matcher names: its value, or the
// alternatives of a regular expression made of plain words only. It
// returns none for other regular expressions and for Grafana variables.
func literalValues(m *labels.Matcher) []string {
	if m.Value == "" || strings.Contains(m.Value, grafanaMarker) {
		return nil
	}
	switch m.Type {
	case labels.MatchEqual, labels.MatchNotEqual:
		return []string{m.Value}
	}
	alts := strings.Split(m.Value, "|")
	for _, a := range alts {
		if !literalName.MatchString(a) {
			return nil
		}
	}
	return alts
}

// hint suggests what a name not in the catalog was meant to be.
func (c *checker) hint(name string) string {
	if c.cat[name+"_bucket"] != nil {
		return "; it is a classic histogram: select " + name + "_bucket, _sum or _count"
	}
	var near []string
	for _, n := range c.cat.names() {
		if distance(n, name) <= 3 {
			near = append(near, n)
		}
	}
	if len(near) > 0 {
		return "; did you mean " + strings.Join(near, " or ") + "?"
	}
	return ""
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// labelSet is the set of labels an expression's result has; nil when it
// cannot be told.
type labelSet map[string]bool

func setOf(names ...string) labelSet {
	s := labelSet{}
	for _, n := range names {
		s[n] = true
	}
	return s
}

// outputLabels returns the labels the series of e's result can have, as
// far as the expression shows: selectors give their metric's labels and
// the target labels, aggregations keep their grouping, binary operators
// follow Prometheus's vector matching. It returns nil when it cannot tell.
func (c *checker) outputLabels(e parser.Expr) labelSet {
	switch e := e.(type) {
	case *parser.VectorSelector:
		s := c.cat[metricName(e)]
		if s == nil {
			return nil
		}
		out := setOf(targetLabels...)
		maps.Copy(out, s.labels)
		return out
	case *parser.MatrixSelector:
		return c.outputLabels(e.VectorSelector)
	case *parser.SubqueryExpr:
		return c.outputLabels(e.Expr)
	case *parser.ParenExpr:
		return c.outputLabels(e.Expr)
	case *parser.StepInvariantExpr:
		return c.outputLabels(e.Expr)
	case *parser.UnaryExpr:
		return c.outputLabels(e.Expr)
	case *parser.NumberLiteral, *parser.StringLiteral:
		return labelSet{}
	case *parser.AggregateExpr:
		in := c.outputLabels(e.Expr)
		switch e.Op {
		case parser.TOPK, parser.BOTTOMK, parser.LIMITK, parser.LIMIT_RATIO:
			return in
		}
		var out labelSet
		if e.Without {
			if in == nil {
				return nil
			}
			out = maps.Clone(in)
			for _, g := range e.Grouping {
				delete(out, g)
			}
		} else {
			out = labelSet{}
			for _, g := range e.Grouping {
				if in == nil || in[g] {
					out[g] = true
				}
			}
		}
		if e.Op == parser.COUNT_VALUES {
			if l, ok := e.Param.(*parser.StringLiteral); ok {
				out[l.Val] = true
			}
		}
		return out
	case *parser.Call:
		return c.callLabels(e)
	case *parser.BinaryExpr:
		return c.binaryLabels(e)
	}
	return nil
}

// callLabels returns the labels of a function's result.
func (c *checker) callLabels(e *parser.Call) labelSet {
	switch e.Func.Name {
	case "absent", "absent_over_time":
		// The result has the labels the selector's equality matchers set.
		out := labelSet{}
		parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				for _, m := range vs.LabelMatchers {
					if m.Type == labels.MatchEqual && m.Name != model.MetricNameLabel {
						out[m.Name] = true
					}
				}
			}
			return nil
		})
		return out
	case "label_replace", "label_join":
		in := c.outputLabels(e.Args[0])
		if in == nil {
			return nil
		}
		out := maps.Clone(in)
		if l, ok := e.Args[1].(*parser.StringLiteral); ok {
			out[l.Val] = true
		}
		return out
	}
	if e.Type() == parser.ValueTypeScalar {
		return labelSet{}
	}
	for _, a := range e.Args {
		if t := a.Type(); t == parser.ValueTypeVector || t == parser.ValueTypeMatrix {
			out := c.outputLabels(a)
			if out != nil && strings.HasPrefix(e.Func.Name, "histogram_") {
				out = maps.Clone(out)
				delete(out, "le")
			}
			return out
		}
	}
	return labelSet{}
}

// binaryLabels returns the labels of a binary operation's result.
func (c *checker) binaryLabels(e *parser.BinaryExpr) labelSet {
	l, r := c.outputLabels(e.LHS), c.outputLabels(e.RHS)
	if e.LHS.Type() == parser.ValueTypeScalar {
		return r
	}
	if e.RHS.Type() == parser.ValueTypeScalar {
		return l
	}
	switch e.Op {
	case parser.LAND, parser.LUNLESS:
		return l
	case parser.LOR:
		if l == nil || r == nil {
			return nil
		}
		out := maps.Clone(l)
		maps.Copy(out, r)
		return out
	}
	vm := e.VectorMatching
	if vm == nil {
		return l
	}
	var many, one labelSet
	switch vm.Card {
	case parser.CardOneToOne:
		if l == nil {
			return nil
		}
		if vm.On {
			out := labelSet{}
			for _, n := range vm.MatchingLabels {
				if l[n] {
					out[n] = true
				}
			}
			return out
		}
		out := maps.Clone(l)
		for _, n := range vm.MatchingLabels {
			delete(out, n)
		}
		return out
	case parser.CardManyToOne:
		many, one = l, r
	case parser.CardOneToMany:
		many, one = r, l
	default:
		return nil
	}
	if many == nil {
		return nil
	}
	out := maps.Clone(many)
	for _, n := range vm.Include {
		if one == nil || one[n] {
			out[n] = true
		} else {
			delete(out, n)
		}
	}
	return out
}

// labelValues returns the closed set of values the metrics of names give
// label, or nil when any value goes.
func (c *checker) labelValues(names []string, label string) map[string]bool {
	var out map[string]bool
	for _, n := range names {
		s := c.cat[n]
		if s == nil || !s.labels[label] {
			continue
		}
		v := s.values[label]
		if v == nil {
			return nil
		}
		if out == nil {
			out = map[string]bool{}
		}
		maps.Copy(out, v)
	}
	return out
}

var (
	// templateLabel matches a label an alert template prints:
	// $labels.name or index $labels "name".
	templateLabel = regexp.MustCompile(`\$labels\.(\w+)|index\s+\$labels\s+"(\w+)"`)
	// templateCompare matches a comparison of a label with a value in an
	// alert template: eq $labels.name "value".
	templateCompare = regexp.MustCompile(`eq\s+\$labels\.(\w+)\s+"([^"]*)"`)
	// legendLabel matches a label a Grafana legend prints: {{name}}.
	legendLabel = regexp.MustCompile(`\{\{\s*(\w+)\s*\}\}`)
)

// templateProblems checks an alert template against the expression's
// result: every label it prints must be one the result has, and every
// value it compares a label with one the label can take.
func (c *checker) templateProblems(text string, out labelSet, names []string) []string {
	var problems []string
	for _, m := range templateLabel.FindAllStringSubmatch(text, -1) {
		l := m[1] + m[2]
		if out != nil && !out[l] {
			problems = append(problems, fmt.Sprintf("prints $labels.%s, but the expression's result has no label %q (it has: %s)",
				l, l, strings.Join(sortedKeys(out), ", ")))
		}
	}
	for _, m := range templateCompare.FindAllStringSubmatch(text, -1) {
		if allowed := c.labelValues(names, m[1]); allowed != nil && !allowed[m[2]] {
			problems = append(problems, fmt.Sprintf("compares $labels.%s with %q, a value it never has (it has: %s)",
				m[1], m[2], strings.Join(sortedKeys(allowed), ", ")))
		}
	}
	return problems
}

// legendProblems checks a Grafana legend: every label it prints must be
// one the query's result has.
func legendProblems(legend string, out labelSet) []string {
	if out == nil {
		return nil
	}
	var problems []string
	for _, m := range legendLabel.FindAllStringSubmatch(legend, -1) {
		if !out[m[1]] {
			problems = append(problems, fmt.Sprintf("legend prints {{%s}}, but the query's result has no label %q (it has: %s)",
				m[1], m[1], strings.Join(sortedKeys(out), ", ")))
		}
	}
	return problems
}

// histogramBuckets reports whether names include the buckets of a
// histogram, whose panels should show exemplars.
func (c *checker) histogramBuckets(names []string) bool {
	for _, n := range names {
		if s := c.cat[n]; s != nil && s.histogram != "" && n == s.histogram+"_bucket" {
			return true
		}
	}
	return false
}
