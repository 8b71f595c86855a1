package fcgi

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// nginxRequest is the byte stream nginx sends for a small POST: BEGIN_REQUEST
// (responder, no keep-conn), the PARAMS stream in one padded record, the
// empty PARAMS record, the body in STDIN and the empty STDIN record.
func nginxRequest() []byte {
	params := encodePairs(nginxParams())
	body := []byte("name=value&x=1")
	return concat(
		makeRecord(1, 1, []byte{0, 1, 0, 0, 0, 0, 0, 0}, 0),
		makeRecord(4, 1, params, (8-len(params)%8)%8),
		makeRecord(4, 1, nil, 0),
		makeRecord(5, 1, body, (8-len(body)%8)%8),
		makeRecord(5, 1, nil, 0),
	)
}

func FuzzReader(f *testing.F) {
	f.Add([]byte{})
	f.Add(nginxRequest())
	f.Add(nginxRequest()[:37])
	f.Add(concat(
		makeRecord(6, 1, []byte("Content-type: text/html\r\n\r\nhi"), 2),
		makeRecord(6, 1, nil, 0),
		makeRecord(3, 1, []byte{0, 0, 0, 0, 0, 0, 0, 0}, 0),
	))
	f.Add([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
	f.Add([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03})
	f.Add(makeRecord(6, 1, []byte("abc"), 255)[:100])
	f.Add([]byte{1, 6, 0, 1, 0xff, 0xff, 0xff, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		off := 0
		for records := 0; ; records++ {
			if records > len(data)/8+1 {
				t.Fatalf("%d records from %d bytes", records, len(data))
			}
			h, err := r.Next()
			if err != nil {
				checkReaderError(t, data, off, err)
				return // stop on the first error
			}
			raw := r.Raw()
			n := HeaderLen + int(h.ContentLength) + int(h.PaddingLength)
			if len(raw) != n {
				t.Fatalf("record at %d: Raw has %d bytes, want 8+%d+%d", off, len(raw), h.ContentLength, h.PaddingLength)
			}
			if h.Version != 1 || raw[0] != 1 {
				t.Fatalf("record at %d: version %d returned without error", off, h.Version)
			}
			if off+n > len(data) || !bytes.Equal(raw, data[off:off+n]) {
				t.Fatalf("record at %d: Raw is not the input bytes", off)
			}
			if !bytes.Equal(r.Content(), data[off+8:off+8+int(h.ContentLength)]) {
				t.Fatalf("record at %d: Content is not the input bytes", off)
			}
			if h.Type != RecordType(data[off+1]) || h.RequestID != uint16(data[off+2])<<8|uint16(data[off+3]) {
				t.Fatalf("record at %d: header %+v does not match % x", off, h, data[off:off+8])
			}
			off += n
		}
	})
}

// checkReaderError checks that the first error of a Reader over data, met
// at offset off, is the right one for what is left.
func checkReaderError(t *testing.T, data []byte, off int, err error) {
	t.Helper()
	left := data[off:]
	var ve *VersionError
	switch {
	case err == io.EOF:
		if len(left) != 0 {
			t.Fatalf("io.EOF with %d bytes left at %d", len(left), off)
		}
	case errors.As(err, &ve):
		if len(left) < 8 || left[0] == 1 || !bytes.Equal(ve.Header[:], left[:8]) {
			t.Fatalf("VersionError %v at %d for % x", err, off, head(left))
		}
	case errors.Is(err, ErrTruncated):
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("ErrTruncated without io.ErrUnexpectedEOF: %v", err)
		}
		if len(left) == 0 {
			t.Fatalf("ErrTruncated at a clean end: %v", err)
		}
		if len(left) >= 8 {
			need := 8 + (int(left[4])<<8 | int(left[5])) + int(left[6])
			if len(left) >= need {
				t.Fatalf("ErrTruncated with a whole record of %d bytes left (%d): %v", need, len(left), err)
			}
		}
	default:
		t.Fatalf("unexpected error at %d: %v", off, err)
	}
}

func FuzzPairs(f *testing.F) {
	f.Add([]byte{})
	f.Add(encodePairs(nginxParams()))
	f.Add([]byte("\x0b\x02SERVER_PORT80"))
	f.Add([]byte("\x80\x00\x00\x05\x80\x00\x00\x02HELLOhi"))
	f.Add(append([]byte("\x01\x80\x00\x00\x80V"), strings.Repeat("v", 128)...))
	f.Add([]byte("\x0e\x00FCGI_MAX_CONNS\x0d\x00FCGI_MAX_REQS"))
	f.Add([]byte{0x80, 0x00})
	f.Add([]byte("\xff\xff\xff\xff\x00ab"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var pairs []Pair
		err := ForEachPair(data, func(name, value []byte) bool {
			pairs = append(pairs, Pair{string(name), string(value)})
			return true
		})
		// Stopping early never fails, whatever follows.
		calls := 0
		if err := ForEachPair(data, func(_, _ []byte) bool { calls++; return false }); err != nil && calls > 0 {
			t.Fatalf("ForEachPair stopped after the first pair and still returned %v", err)
		}
		if err != nil {
			var pe *pairError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *pairError", err)
			}
			if pe.Offset < 0 || pe.Offset >= len(data) {
				t.Fatalf("Offset %d outside the %d input bytes", pe.Offset, len(data))
			}
			// The pairs before the bad one re-encode to the bytes before
			// its offset, up to the choice of length encoding.
			ok, err := parsePairs(data[:pe.Offset])
			if err != nil || !equalPairs(ok, pairs) {
				t.Fatalf("the %d bytes before the bad pair decode to %q, %v; want %q", pe.Offset, ok, err, pairs)
			}
			return
		}
		enc := encodePairs(pairs)
		again, err := parsePairs(enc)
		if err != nil {
			t.Fatalf("re-encoded pairs do not decode: %v", err)
		}
		if !equalPairs(again, pairs) {
			t.Fatalf("re-encoded pairs decode to %q, want %q", again, pairs)
		}
		if len(enc) > len(data) {
			t.Fatalf("re-encoding grew %d bytes to %d: AppendPair should use the shortest lengths", len(data), len(enc))
		}
	})
}

func equalPairs(a, b []Pair) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}

func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{
		"127.0.0.1:9000", "[::1]:9000", "localhost:9000", "unix:/run/php/php8.2-fpm.sock",
		"tcp://127.0.0.1:9000", "unix:///tmp/x.sock", "", "9000", "/tmp/x.sock", "unix:",
		"unix:relative", "http://x:1", "host:0", "host:70000", "host:abc", ":9000",
		" unix:@abstract ", "[fe80::1%eth0]:9000",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddr(s)
		if err != nil {
			if !a.IsZero() {
				t.Fatalf("ParseAddr(%q) failed but returned %#v", s, a)
			}
			if !strings.Contains(err.Error(), addrForms) {
				t.Fatalf("error %q does not list the accepted forms", err)
			}
			return
		}
		if a.Network != "tcp" && a.Network != "unix" {
			t.Fatalf("ParseAddr(%q) = network %q", s, a.Network)
		}
		if a.Address == "" {
			t.Fatalf("ParseAddr(%q) = empty address", s)
		}
		again, err := ParseAddr(a.String())
		if err == nil && again == a {
			return
		}
		t.Fatalf("ParseAddr(%q) = %#v; ParseAddr(String() = %q) = %#v, %v", s, a, a.String(), again, err)
	})
}
