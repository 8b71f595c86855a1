package proxy

import "testing"

func TestHeaderScannerFindsStatusAcrossRecordBoundaries(t *testing.T) {
	tests := []struct {
		name      string
		chunks    []string
		complete  bool
		status    int
		streaming bool
	}{
		{"default 200", []string{"Content-Type: text/html\r\n\r\nbody"}, true, 200, false},
		{"status header", []string{"Status: 404 Not Found\r\nContent-Type: text/html\r\n\r\n"}, true, 404, false},
		{"bare LF", []string{"Status: 201\nX: y\n\nbody"}, true, 201, false},
		{"split terminator", []string{"Status: 500\r\nA: b\r", "\n\r", "\nbody"}, true, 500, false},
		{"split in a name", []string{"Sta", "tus: 503\r\n\r\n"}, true, 503, false},
		{"redirect", []string{"Location: https://example.com/\r\n\r\n"}, true, 302, false},
		{"redirect with status", []string{"Location: /x\r\nStatus: 301\r\n\r\n"}, true, 301, false},
		{"accel buffering off", []string{"X-Accel-Buffering: no\r\n\r\n"}, true, 200, true},
		{"event stream", []string{"Content-Type: Text/Event-Stream; charset=utf-8\r\n\r\n"}, true, 200, true},
		{"not yet complete", []string{"Content-Type: text/html\r\n"}, false, 0, false},
		{"bad status ignored", []string{"Status: abc\r\n\r\n"}, true, 200, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s headerScanner
			for _, c := range tt.chunks {
				s.feed([]byte(c))
			}
			if s.complete != tt.complete || s.status != tt.status || s.streaming != tt.streaming {
				t.Errorf("complete %v status %d streaming %v; want %v %d %v", s.complete, s.status, s.streaming, tt.complete, tt.status, tt.streaming)
			}
		})
	}
}

func TestHeaderScannerGivesUpOnEndlessHeaders(t *testing.T) {
	var s headerScanner
	line := []byte("X-Filler: 0123456789abcdef0123456789abcdef\r\n")
	for range 2000 {
		s.feed(line)
	}
	if !s.done || s.complete {
		t.Errorf("done %v complete %v after %d bytes, want given up", s.done, s.complete, 2000*len(line))
	}
}
