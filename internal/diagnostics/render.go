package diagnostics

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/cgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// Detail is how much an error response tells the client.
type Detail string

// The detail policies of FCGISCOPE_ERROR_DETAIL.
const (
	// DetailFull shows everything: detail, hints, evidence, timeline,
	// stderr.
	DetailFull Detail = "full"
	// DetailLocal shows everything to clients on loopback and on the
	// networks an Audience trusts, and DetailMinimal to the rest.
	DetailLocal Detail = "local"
	// DetailMinimal shows the status, the title, the cause id and the
	// request id: no paths, addresses or stderr.
	DetailMinimal Detail = "minimal"
)

// ParseDetail checks a FCGISCOPE_ERROR_DETAIL value.
func ParseDetail(s string) (Detail, error) {
	switch d := Detail(s); d {
	case DetailFull, DetailLocal, DetailMinimal:
		return d, nil
	}
	return "", fmt.Errorf("must be full, local or minimal")
}

// render builds the replacement response for t, explained by d, in the
// format the client asked for and with the detail it may see.
func render(t *outcome.Trace, d *Diagnosis, audience Audience) cgi.Reply {
	v := newView(t, d, audience.Full(t.RemoteAddr))

	var body []byte
	var ctype string
	switch negotiate(t.Accept) {
	case formatProblem:
		ctype = "application/problem+json"
		body = v.problemJSON()
	case formatHTML:
		ctype = "text/html; charset=utf-8"
		var buf bytes.Buffer
		if err := pageTemplate.Execute(&buf, v); err != nil {
			body, ctype = v.text(), "text/plain; charset=utf-8"
		} else {
			body = buf.Bytes()
		}
	default:
		ctype = "text/plain; charset=utf-8"
		body = v.text()
	}

	var head strings.Builder
	fmt.Fprintf(&head, "Status: %d %s\r\n", v.Status, statusText(v.Status))
	fmt.Fprintf(&head, "Content-Type: %s\r\n", ctype)
	head.WriteString("Cache-Control: no-store\r\n")
	fmt.Fprintf(&head, "X-Fcgiscope-Cause: %s\r\n", d.Cause.ID)
	fmt.Fprintf(&head, "X-Fcgiscope-Request-Id: %s\r\n", headerSafe(t.RequestID))
	if v.Status == 503 {
		head.WriteString("Retry-After: 1\r\n")
	}
	head.WriteString("\r\n")
	reply := append([]byte(head.String()), body...)

	// nginx's error log is the operator's: it always gets the whole story.
	line := fmt.Sprintf("fcgiscope: %s: %s (request_id=%s)", d.Cause.ID, oneLine(d.Detail), t.RequestID)
	return cgi.Reply{CGI: reply, LogLine: line}
}

// view is what the three formats show.
type view struct {
	Full      bool
	Status    int
	Title     string
	Cause     string
	RequestID string
	Detail    string
	Hints     []string
	Evidence  map[string]string
	Upstream  string
	Method    string
	URI       string
	Script    string
	ElapsedMS float64
	Timeline  []step
	Stderr    string
}

type step struct {
	Name string
	At   string // offset from the start, e.g. "+12.3 ms"
}

func newView(t *outcome.Trace, d *Diagnosis, full bool) *view {
	v := &view{
		Full:      full,
		Status:    d.StatusCode(),
		Title:     d.Cause.Title,
		Cause:     d.Cause.ID,
		RequestID: t.RequestID,
		ElapsedMS: ms(t.End.Sub(t.Accepted)),
	}
	if !full {
		return v
	}
	v.Detail, v.Hints, v.Evidence = d.Detail, d.Hints, d.Evidence
	v.Upstream, v.Method, v.URI, v.Script = t.Upstream.String(), t.Method, RedactQuery(t.URI), t.Script
	v.Stderr = string(t.Stderr)
	add := func(name string, at time.Time) {
		if !at.IsZero() {
			v.Timeline = append(v.Timeline, step{name, "+" + seconds(at.Sub(t.Accepted))})
		}
	}
	add("request received from the web server", t.Accepted)
	add("connecting to php-fpm", t.DialStart)
	add("connected", t.DialEnd)
	add("request body sent", t.StdinDone)
	add("first response byte", t.FirstByte)
	add("failed: "+d.Cause.ID, t.End)
	return v
}

func (v *view) problemJSON() []byte {
	type problem struct {
		Type      string            `json:"type"`
		Title     string            `json:"title"`
		Status    int               `json:"status"`
		Detail    string            `json:"detail,omitempty"`
		Instance  string            `json:"instance"`
		Cause     string            `json:"cause"`
		RequestID string            `json:"request_id"`
		ElapsedMS float64           `json:"elapsed_ms"`
		Upstream  string            `json:"upstream,omitempty"`
		Hints     []string          `json:"hints,omitempty"`
		Evidence  map[string]string `json:"evidence,omitempty"`
	}
	b, _ := json.MarshalIndent(problem{
		Type:      "urn:fcgiscope:cause:" + v.Cause,
		Title:     v.Title,
		Status:    v.Status,
		Detail:    v.Detail,
		Instance:  "urn:fcgiscope:request:" + v.RequestID,
		Cause:     v.Cause,
		RequestID: v.RequestID,
		ElapsedMS: v.ElapsedMS,
		Upstream:  v.Upstream,
		Hints:     v.Hints,
		Evidence:  v.Evidence,
	}, "", "  ")
	return append(b, '\n')
}

func (v *view) text() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s\n%s\n\ncause: %s\nrequest id: %s\n", v.Status, statusText(v.Status), v.Title, v.Cause, v.RequestID)
	if !v.Full {
		return []byte(b.String())
	}
	fmt.Fprintf(&b, "\n%s\n", v.Detail)
	if len(v.Hints) > 0 {
		b.WriteString("\nWhat to change:\n")
		for _, h := range v.Hints {
			fmt.Fprintf(&b, "  - %s\n", h)
		}
	}
	if len(v.Timeline) > 0 {
		b.WriteString("\nTimeline:\n")
		for _, s := range v.Timeline {
			fmt.Fprintf(&b, "  %10s  %s\n", s.At, s.Name)
		}
	}
	if v.Stderr != "" {
		fmt.Fprintf(&b, "\nphp-fpm stderr:\n%s\n", v.Stderr)
	}
	return []byte(b.String())
}

//go:embed page.html
var pageHTML string

var pageTemplate = template.Must(template.New("page").Parse(pageHTML))

func statusText(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 431:
		return "Request Header Fields Too Large"
	case 499:
		return "Client Closed Request"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	}
	if text := http.StatusText(code); text != "" {
		return text
	}
	return strconv.Itoa(code)
}

// headerSafe drops bytes that would end or split a header line.
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// oneLine folds s onto a single line for a log.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

var bannerTemplate = template.Must(template.New("banner").Parse(`<div id="fcgiscope-banner" style="all:initial;display:block;font:14px/1.4 system-ui,sans-serif;background:#fff4e5;color:#222;border-bottom:3px solid #e8590c;padding:12px 16px;margin:0">` +
	`<strong style="all:unset;font-weight:bold">fcgiscope: {{.Cause.ID}}</strong> · {{.Cause.Title}}` +
	`<p style="all:unset;display:block;margin-top:6px">{{.Detail}}</p>` +
	`{{range .Hints}}<p style="all:unset;display:block;margin-top:4px">→ {{.}}</p>{{end}}</div>`))

// renderBanner says d in an HTML fragment for the top of a page.
func renderBanner(d *Diagnosis) []byte {
	var b bytes.Buffer
	if err := bannerTemplate.Execute(&b, d); err != nil {
		return nil
	}
	return b.Bytes()
}
