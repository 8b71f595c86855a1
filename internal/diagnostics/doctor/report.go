package doctor

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// SchemaVersion is the version of WriteJSON's document. It goes up when a
// field changes meaning or goes away; new fields keep it.
const SchemaVersion = 1

// Summary counts what a report holds, for a CI check that reads only it.
type Summary struct {
	Errors     int `json:"errors"`
	Warnings   int `json:"warnings"`
	Notes      int `json:"notes"`
	Probes     int `json:"probes"`
	NotChecked int `json:"not_checked"`
}

// Summary counts the report's findings by severity, its probes and what
// it could not check.
func (r *Report) Summary() Summary {
	s := Summary{Probes: len(r.Probes), NotChecked: len(r.NotChecked)}
	for _, f := range r.Findings {
		switch f.Severity {
		case SeverityError:
			s.Errors++
		case SeverityWarning:
			s.Warnings++
		default:
			s.Notes++
		}
	}
	return s
}

// WriteJSON writes the report as one indented JSON document, for CI: the
// schema version and the summary first, then the report's fields.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		SchemaVersion int     `json:"schema_version"`
		Summary       Summary `json:"summary"`
		*Report
	}{SchemaVersion, r.Summary(), r})
}

// ANSI colours, used only on a terminal.
const (
	ansiRed    = "\x1b[31;1m"
	ansiYellow = "\x1b[33;1m"
	ansiCyan   = "\x1b[36m"
	ansiBold   = "\x1b[1m"
	ansiDim    = "\x1b[2m"
	ansiReset  = "\x1b[0m"
)

// WriteText writes the report for people: findings grouped by severity,
// errors first, then the live probes and what could not be checked.
// color adds ANSI colours; use it only when w is a terminal.
func (r *Report) WriteText(w io.Writer, color bool) error {
	p := &printer{w: w, color: color}
	p.line("fcgiscope doctor")
	if r.Nginx != "" {
		p.line(fmt.Sprintf("  nginx:   %s (%d files)", r.Nginx, len(r.NginxFiles)))
	}
	if r.FPM != "" {
		p.line(fmt.Sprintf("  php-fpm: %s (%d files)", r.FPM, len(r.FPMFiles)))
	}
	groups := []struct {
		sev   Severity
		title string
		tag   string
		col   string
	}{
		{SeverityError, "ERRORS: these break requests now or at the next restart", "ERROR", ansiRed},
		{SeverityWarning, "WARNINGS: these break requests under load or hide why they fail", "WARN", ansiYellow},
		{SeverityInfo, "INFO", "INFO", ansiCyan},
	}
	for _, g := range groups {
		var fs []Finding
		for _, f := range r.Findings {
			if f.Severity == g.sev {
				fs = append(fs, f)
			}
		}
		if len(fs) == 0 {
			continue
		}
		p.line("")
		p.line(p.paint(ansiBold, fmt.Sprintf("%s (%d)", g.title, len(fs))))
		for _, f := range fs {
			p.line("")
			p.line(p.paint(g.col, g.tag+" "+f.ID) + ": " + f.Title)
			if f.Detail != "" {
				p.field("what", f.Detail)
			}
			for _, l := range f.Nginx {
				p.field("nginx", locText(l))
			}
			for _, l := range f.FPM {
				p.field("php-fpm", locText(l))
			}
			for _, l := range f.K8s {
				p.field("k8s", locText(l))
			}
			if f.Cause != "" {
				p.field("cause", f.Cause+" (the id fcgiscope's sidecar logs for such requests)")
			}
			if f.Impact != "" {
				p.field("if left", f.Impact)
			}
			if f.Fix != "" {
				p.field("fix", f.Fix)
			}
		}
	}
	switch {
	case len(r.Findings) == 0 && len(r.NotChecked) == 0:
		p.line("")
		p.line("No problems found.")
	case len(r.Findings) == 0:
		p.line("")
		p.line(fmt.Sprintf("No problems found in what could be checked; %d things could not be (NOT CHECKED, below).", len(r.NotChecked)))
	}
	if len(r.Probes) > 0 {
		p.line("")
		p.line(p.paint(ansiBold, "LIVE PROBES"))
		for _, pr := range r.Probes {
			name := pr.Addr
			if pr.Pool != "" {
				name += " (pool " + pr.Pool + ")"
			}
			var status string
			if pr.OK {
				status = fmt.Sprintf("answers FastCGI in %.1f ms", pr.LatencyMS)
				if pr.Relays != "" {
					status = fmt.Sprintf("fcgiscope answers in %.1f ms; it relays to %s", pr.LatencyMS, pr.Relays)
				}
				if pr.Ping != "" {
					status += fmt.Sprintf("; ping %s: %s in %.1f ms", pr.Ping, pr.PingResult, pr.PingMS)
				}
			} else {
				status = p.paint(ansiRed, "FAILS "+pr.Cause) + ": " + pr.Error
			}
			p.line(fmt.Sprintf("  %s: %s", name, status))
			for _, v := range pr.Via {
				p.line(p.paint(ansiDim, "      "+viaText(v)))
			}
		}
	}
	if len(r.NotChecked) > 0 {
		p.line("")
		p.line(p.paint(ansiBold, "NOT CHECKED"))
		for _, n := range r.NotChecked {
			p.line("  - " + n)
		}
	}
	p.line("")
	p.line(summary(r))
	return p.err
}

func viaText(v string) string {
	if strings.HasPrefix(v, "probe ") {
		return v
	}
	return "used by " + v
}

func summary(r *Report) string {
	s := r.Summary()
	return fmt.Sprintf("%d errors, %d warnings, %d notes; %d addresses probed, %d things not checked.",
		s.Errors, s.Warnings, s.Notes, s.Probes, s.NotChecked)
}

func locText(l *Location) string {
	switch {
	case l == nil:
		return ""
	case l.Text == "":
		return l.String()
	case l.File == "":
		return l.Text
	}
	return l.String() + "  " + l.Text
}

type printer struct {
	w     io.Writer
	color bool
	err   error
}

func (p *printer) line(s string) {
	if p.err != nil {
		return
	}
	_, p.err = io.WriteString(p.w, s+"\n")
}

func (p *printer) paint(code, s string) string {
	if !p.color {
		return s
	}
	return code + s + ansiReset
}

// field prints a labelled, indented value; continuation lines keep the
// indentation so that a fix's directive lines can be copied as they are.
func (p *printer) field(label, value string) {
	const indent = "    "
	pad := fmt.Sprintf("%-9s", label+":")
	lines := strings.Split(value, "\n")
	p.line(indent + p.paint(ansiDim, pad) + lines[0])
	for _, l := range lines[1:] {
		p.line(indent + strings.Repeat(" ", len(pad)) + l)
	}
}
