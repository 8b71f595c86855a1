package diagnostics

import (
	"strconv"
	"strings"
)

// format is a representation of an error response.
type format int

const (
	formatText format = iota
	formatHTML
	formatProblem
)

// negotiate picks the representation the Accept header prefers among
// problem+json, HTML and plain text. Ties and wildcards go to plain text,
// which every client can show; browsers name text/html explicitly, API
// clients application/json or application/problem+json.
func negotiate(accept string) format {
	best, bestQ, bestSpecific := formatText, 0.0, -1
	for _, part := range strings.Split(accept, ",") {
		mt, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		mt = strings.ToLower(strings.TrimSpace(mt))
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
			if ok && strings.TrimSpace(k) == "q" {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					q = f
				}
			}
		}
		if q <= 0 {
			continue
		}
		var f format
		specific := 2
		switch mt {
		case "application/problem+json", "application/json":
			f = formatProblem
		case "text/html", "application/xhtml+xml":
			f = formatHTML
		case "text/plain":
			f = formatText
		case "text/*", "*/*":
			f, specific = formatText, 0
		default:
			continue
		}
		if q > bestQ || (q == bestQ && specific > bestSpecific) {
			best, bestQ, bestSpecific = f, q, specific
		}
	}
	return best
}
