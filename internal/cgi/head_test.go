package cgi

import (
	"bytes"
	"strings"
	"testing"
)

func TestStatusFollowsNginx(t *testing.T) {
	tests := []struct {
		value string
		code  int
		ok    bool
	}{
		{"404 Not Found", 404, true},
		{"201", 201, true},
		{"  302 Found", 302, true},
		{"2000 odd", 200, true}, // nginx reads the first three bytes
		{"abc", 0, false},
		{"20", 0, false},
		{"099", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		code, ok := ParseStatus([]byte(tt.value))
		if code != tt.code || ok != tt.ok {
			t.Errorf("ParseStatus(%q) = %d, %v; want %d, %v", tt.value, code, ok, tt.code, tt.ok)
		}
	}
}

func TestHeadNamesTheLineNginxRefuses(t *testing.T) {
	tests := []struct {
		head, rejected, why string
	}{
		{"Content-Type: text/html\r\nX_Under: ok\r\nWeird(name): ok\r\n", "", ""},
		{"HTTP/1.1 200 OK\r\nX: y\r\n", "", ""}, // skipped by nginx, as IIS sends it
		{"NoColonAtAll\r\n", "", ""},            // a header without a value to nginx
		{"X: y\r\r\n", "", ""},                  // CRs before the LF are fine
		{"Hello world\r\nX: y\r\n", "Hello world", "a space in the header name (or no colon after it)"},
		{" X: y\n", " X: y", "the line starts with a space"},
		{"X: y\r\n: z\r\n", ": z", "the line starts with a colon"},
		{"X: a\x00b\r\n", "X: a\x00b", "a NUL byte in the value"},
		{"X: a\rb\r\n", "X: a\rb", "a CR inside the line"},
		{"Bad\x01Name: v\r\n", "Bad\x01Name: v", "the control character '\\x01' in the header name (or no colon after it)"},
		{"Status: two hundred\r\n", "Status: two hundred", "its Status does not start with a three-digit status code"},
	}
	for _, tt := range tests {
		h := ParseHead([]byte(tt.head))
		if h.Rejected != tt.rejected || h.RejectedWhy != tt.why {
			t.Errorf("%q: rejected %q (%s), want %q (%s)", tt.head, h.Rejected, h.RejectedWhy, tt.rejected, tt.why)
		}
	}
}

func TestScannerFindsTheHeadAcrossRecordBoundaries(t *testing.T) {
	tests := []struct {
		name      string
		chunks    []string
		ended     bool
		status    int
		badStatus string
		streaming bool
		body      string
	}{
		{"default 200", []string{"Content-Type: text/html\r\n\r\nbody"}, true, 200, "", false, "body"},
		{"status header", []string{"Status: 404 Not Found\r\nContent-Type: text/html\r\n\r\n"}, true, 404, "", false, ""},
		{"bare LF", []string{"Status: 201\nX: y\n\nbody"}, true, 201, "", false, "body"},
		{"split terminator", []string{"Status: 500\r\nA: b\r", "\n\r", "\nbody"}, true, 500, "", false, "body"},
		{"split in a name", []string{"Sta", "tus: 503\r\n\r\n", "more"}, true, 503, "", false, "more"},
		{"no headers", []string{"\r\nbody"}, true, 200, "", false, "body"},
		{"no headers, bare LF", []string{"\n", "body"}, true, 200, "", false, "body"},
		{"redirect", []string{"Location: https://example.com/\r\n\r\n"}, true, 302, "", false, ""},
		{"redirect with status", []string{"Location: /x\r\nStatus: 301\r\n\r\n"}, true, 301, "", false, ""},
		{"accel buffering off", []string{"X-Accel-Buffering: no\r\n\r\n"}, true, 200, "", true, ""},
		{"event stream", []string{"Content-Type: Text/Event-Stream; charset=utf-8\r\n\r\n"}, true, 200, "", true, ""},
		{"not yet ended", []string{"Content-Type: text/html\r\n"}, false, 0, "", false, ""},
		{"bad status", []string{"Status: abc\r\n\r\n"}, true, 200, "abc", false, ""},
		{"bad status, redirect", []string{"Status: x\r\nLocation: /y\r\n\r\n"}, true, 302, "x", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Scanner
			var body []byte
			for _, c := range tt.chunks {
				body = append(body, s.Feed([]byte(c))...)
			}
			h := s.Head()
			if s.Ended() != tt.ended || h.Status != tt.status || h.BadStatus != tt.badStatus || h.Streaming != tt.streaming || string(body) != tt.body {
				t.Errorf("ended %v status %d bad %q streaming %v body %q; want %v %d %q %v %q",
					s.Ended(), h.Status, h.BadStatus, h.Streaming, body, tt.ended, tt.status, tt.badStatus, tt.streaming, tt.body)
			}
		})
	}
}

func TestScannerSplitAtEveryByteAgreesWithParseHead(t *testing.T) {
	resp := "Status: 418 I'm a teapot\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\n\r\nthe body"
	end, body := HeadEnd([]byte(resp), 0)
	want := ParseHead([]byte(resp[:end]))
	if want.Status != 418 || want.ContentType != "text/plain" || len(want.Fields) != 3 || resp[body:] != "the body" {
		t.Fatalf("ParseHead: %+v, body %q", want, resp[body:])
	}
	for i := 1; i < len(resp); i++ {
		var s Scanner
		got := append([]byte(nil), s.Feed([]byte(resp[:i]))...)
		got = append(got, s.Feed([]byte(resp[i:]))...)
		h := s.Head()
		if !s.Ended() || h.Status != want.Status || h.ContentType != want.ContentType || h.Len != want.Len || string(got) != "the body" {
			t.Errorf("split at %d: ended %v %+v body %q", i, s.Ended(), h, got)
		}
	}
}

func TestScannerGivesUpOnEndlessHeaders(t *testing.T) {
	s := Scanner{Limit: 4096}
	line := []byte("X-Filler: 0123456789abcdef0123456789abcdef\r\n")
	for range 200 {
		if rest := s.Feed(line); rest != nil {
			t.Fatalf("body %q from an endless head", rest)
		}
	}
	if !s.Done() || s.Ended() {
		t.Errorf("done %v ended %v after %d bytes, want given up", s.Done(), s.Ended(), 200*len(line))
	}
}

func TestScannerLimitIsTheHeadsLength(t *testing.T) {
	head := "X: " + strings.Repeat("a", 97) + "\r\n" // 102 bytes
	for _, tt := range []struct {
		limit int
		ended bool
	}{{102, true}, {101, false}} {
		s := Scanner{Limit: tt.limit}
		s.Feed([]byte(head + "\r\nbody"))
		if s.Ended() != tt.ended {
			t.Errorf("limit %d: ended %v, want %v", tt.limit, s.Ended(), tt.ended)
		}
		s = Scanner{Limit: tt.limit}
		for _, c := range []byte(head + "\r\nbody") {
			s.Feed([]byte{c})
		}
		if s.Ended() != tt.ended {
			t.Errorf("limit %d, a byte at a time: ended %v, want %v", tt.limit, s.Ended(), tt.ended)
		}
	}
}

func TestScannerResetKeepsTheLimit(t *testing.T) {
	s := Scanner{Limit: 20}
	s.Feed([]byte("A: b\r\n\r\n"))
	s.Reset()
	if s.Done() || s.Limit != 20 {
		t.Errorf("after Reset: done %v limit %d", s.Done(), s.Limit)
	}
	if rest := s.Feed([]byte("Status: 500\r\n\r\nx")); !bytes.Equal(rest, []byte("x")) || s.Head().Status != 500 {
		t.Errorf("second response: %q %+v", rest, s.Head())
	}
}

func TestHeadEndFromAnyPoint(t *testing.T) {
	// The blank line may straddle the point where the search starts.
	b := []byte("A: 1\r\n\r\nbody")
	for from := 0; from <= 3; from++ {
		if end, body := HeadEnd(b, from); end != 6 || body != 8 {
			t.Errorf("from %d: %d %d", from, end, body)
		}
	}
}

func BenchmarkScannerOneRecord(b *testing.B) {
	rec := []byte("Content-Type: text/html; charset=UTF-8\r\nX-Powered-By: PHP\r\n\r\n<p>hello</p>")
	b.ReportAllocs()
	var s Scanner
	for b.Loop() {
		s.Reset()
		s.Feed(rec)
	}
}

// FuzzScanner feeds a response in two pieces split anywhere: the Scanner
// must agree with ParseHead on the whole, and find the same body.
func FuzzScanner(f *testing.F) {
	f.Add([]byte("Status: 404 Not Found\r\nContent-Type: text/html\r\n\r\nbody"), 7)
	f.Add([]byte("Location: /x\n\n"), 3)
	f.Add([]byte("\r\nonly a body"), 1)
	f.Add([]byte("X: y\r\n"), 2)
	f.Fuzz(func(t *testing.T, resp []byte, split int) {
		if len(resp) == 0 {
			return
		}
		split = (split%len(resp) + len(resp)) % len(resp)
		s := Scanner{Limit: 1024}
		body := append([]byte(nil), s.Feed(resp[:split])...)
		body = append(body, s.Feed(resp[split:])...)
		end, start := HeadEnd(resp, 0)
		if end < 0 || end > 1024 {
			if s.Ended() || len(body) != 0 {
				t.Fatalf("no head within the limit, yet ended %v with body %q", s.Ended(), body)
			}
			return
		}
		want := ParseHead(resp[:end])
		h := s.Head()
		if !s.Ended() || h.Status != want.Status || h.BadStatus != want.BadStatus || h.Rejected != want.Rejected || h.ContentType != want.ContentType || h.Streaming != want.Streaming || h.Len != end {
			t.Fatalf("scanner %+v ended %v, ParseHead %+v", h, s.Ended(), want)
		}
		if string(body) != string(resp[start:]) {
			t.Fatalf("body %q, want %q", body, resp[start:])
		}
	})
}
