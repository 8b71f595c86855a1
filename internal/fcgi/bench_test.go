package fcgi

import (
	"bytes"
	"io"
	"testing"
)

// nginxParams is the PARAMS set nginx sends for a GET of a PHP page with
// the stock fastcgi_params plus SCRIPT_FILENAME (fastcgi.conf), followed by
// the request's headers as HTTP_* variables. Empty values are sent too:
// nginx does not drop them without if_not_empty.
func nginxParams() []Pair {
	return []Pair{
		{"SCRIPT_FILENAME", "/var/www/html/index.php"},
		{"QUERY_STRING", "page=2&sort=desc"},
		{"REQUEST_METHOD", "GET"},
		{"CONTENT_TYPE", ""},
		{"CONTENT_LENGTH", ""},
		{"SCRIPT_NAME", "/index.php"},
		{"REQUEST_URI", "/articles?page=2&sort=desc"},
		{"DOCUMENT_URI", "/index.php"},
		{"DOCUMENT_ROOT", "/var/www/html"},
		{"SERVER_PROTOCOL", "HTTP/1.1"},
		{"REQUEST_SCHEME", "https"},
		{"HTTPS", "on"},
		{"GATEWAY_INTERFACE", "CGI/1.1"},
		{"SERVER_SOFTWARE", "nginx/1.24.0"},
		{"REMOTE_ADDR", "203.0.113.45"},
		{"REMOTE_PORT", "51724"},
		{"SERVER_ADDR", "10.0.0.12"},
		{"SERVER_PORT", "443"},
		{"SERVER_NAME", "www.example.com"},
		{"REDIRECT_STATUS", "200"},
		{"HTTP_HOST", "www.example.com"},
		{"HTTP_USER_AGENT", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"},
		{"HTTP_ACCEPT", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
		{"HTTP_ACCEPT_LANGUAGE", "en-US,en;q=0.5"},
		{"HTTP_ACCEPT_ENCODING", "gzip, deflate, br, zstd"},
		{"HTTP_COOKIE", "PHPSESSID=9c1e4d5f2b8a7e6d3c0b1a2f4e5d6c7b; theme=dark; consent=1; _ga=GA1.2.1234567890.1700000000; cart=eyJpdGVtcyI6WzEsMiwzXX0"},
		{"HTTP_UPGRADE_INSECURE_REQUESTS", "1"},
	}
}

func encodePairs(ps []Pair) []byte {
	var b []byte
	for _, p := range ps {
		b = AppendPair(b, p.Name, p.Value)
	}
	return b
}

func BenchmarkReaderNext(b *testing.B) {
	for _, bc := range []struct {
		name string
		size int
	}{
		{"small", 64},
		{"64KiB", MaxWriteContent},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var stream []byte
			for len(stream) < 1<<20 {
				stream = append(stream, makeRecord(6, 1, bytes.Repeat([]byte{'x'}, bc.size), (8-bc.size%8)%8)...)
			}
			r := NewReader(&repeatReader{data: stream})
			b.SetBytes(int64(bc.size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.Next(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkWriterWriteStream(b *testing.B) {
	data := bytes.Repeat([]byte("0123456789abcdef"), (1<<20)/16)
	w := NewWriter(io.Discard)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := w.WriteStream(TypeStdout, 1, data); err != nil {
			b.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkForEachPair(b *testing.B) {
	params := encodePairs(nginxParams())
	b.SetBytes(int64(len(params)))
	b.ReportAllocs()
	var n int
	for b.Loop() {
		n = 0
		if err := ForEachPair(params, func(name, value []byte) bool {
			n += len(name) + len(value)
			return true
		}); err != nil {
			b.Fatal(err)
		}
	}
	if n == 0 {
		b.Fatal("no pairs")
	}
}

func BenchmarkAppendPair(b *testing.B) {
	params := nginxParams()
	buf := encodePairs(params)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = buf[:0]
		for _, p := range params {
			buf = AppendPair(buf, p.Name, p.Value)
		}
	}
}

func TestNginxParamsSetIsRealistic(t *testing.T) {
	ps := nginxParams()
	if len(ps) < 25 {
		t.Fatalf("%d pairs, want about 25", len(ps))
	}
	got, err := parsePairs(encodePairs(ps))
	if err != nil || len(got) != len(ps) {
		t.Fatalf("parsePairs = %d pairs, %v", len(got), err)
	}
	// HTTP_COOKIE's value is over 127 bytes: it uses a four-byte length.
	if !bytes.Contains(encodePairs(ps[len(ps)-2:len(ps)-1]), []byte{0x0b, 0x80}) {
		t.Error("HTTP_COOKIE does not exercise the four-byte length")
	}
	// AppendPair into a buffer with room does not allocate.
	buf := make([]byte, 0, 4096)
	if allocs := testing.AllocsPerRun(100, func() {
		buf = buf[:0]
		for _, p := range ps {
			buf = AppendPair(buf, p.Name, p.Value)
		}
	}); allocs != 0 {
		t.Errorf("AppendPair allocates %v times into a buffer with room", allocs)
	}
}
