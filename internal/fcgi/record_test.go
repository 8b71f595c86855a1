package fcgi

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// makeRecord builds the bytes of one record by hand, independently of the
// package's encoder: version 1, type, request id and content length big
// endian, padding length, reserved byte, content, then padding bytes. The
// padding bytes are non-zero on purpose, so that a reader that returns them
// as content is caught.
func makeRecord(typ byte, id uint16, content []byte, padding int) []byte {
	b := []byte{
		1, typ,
		byte(id >> 8), byte(id),
		byte(len(content) >> 8), byte(len(content)),
		byte(padding), 0,
	}
	b = append(b, content...)
	for i := 0; i < padding; i++ {
		b = append(b, 0xEE)
	}
	return b
}

func concat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// TestMakeRecordMatchesSpecLayout pins the helper itself to a byte table
// taken from the FastCGI specification's FCGI_Header layout.
func TestMakeRecordMatchesSpecLayout(t *testing.T) {
	got := makeRecord(6, 0x0102, []byte("abc"), 5)
	want := []byte{
		0x01,       // version
		0x06,       // type STDOUT
		0x01, 0x02, // requestIdB1, requestIdB0
		0x00, 0x03, // contentLengthB1, contentLengthB0
		0x05, // paddingLength
		0x00, // reserved
		'a', 'b', 'c',
		0xEE, 0xEE, 0xEE, 0xEE, 0xEE,
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("makeRecord = % x, want % x", got, want)
	}
}

func TestReaderDecodesHeaderOfEveryType(t *testing.T) {
	tests := []struct {
		typ     byte
		want    RecordType
		id      uint16
		content []byte
		padding int
	}{
		{1, TypeBeginRequest, 1, []byte{0, 1, 0, 0, 0, 0, 0, 0}, 0},
		{2, TypeAbortRequest, 2, nil, 0},
		{3, TypeEndRequest, 3, []byte{0, 0, 0, 0, 0, 0, 0, 0}, 0},
		{4, TypeParams, 0x0100, []byte("\x0b\x02SERVER_PORT80"), 7},
		{5, TypeStdin, 0xFFFF, []byte("body"), 4},
		{6, TypeStdout, 0x1234, []byte("Status: 200 OK\r\n\r\n"), 6},
		{7, TypeStderr, 7, []byte("PHP Warning"), 5},
		{8, TypeData, 8, []byte{0}, 255},
		{9, TypeGetValues, 0, []byte("\x0e\x00FCGI_MAX_CONNS"), 0},
		{10, TypeGetValuesResult, 0, []byte("\x0e\x02FCGI_MAX_CONNS10"), 6},
		{11, TypeUnknownType, 0, []byte{42, 0, 0, 0, 0, 0, 0, 0}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.want.String(), func(t *testing.T) {
			rec := makeRecord(tt.typ, tt.id, tt.content, tt.padding)
			r := NewReader(bytes.NewReader(rec))
			h, err := r.Next()
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			want := Header{
				Version:       1,
				Type:          tt.want,
				RequestID:     tt.id,
				ContentLength: uint16(len(tt.content)),
				PaddingLength: uint8(tt.padding),
			}
			if h != want {
				t.Errorf("header = %+v, want %+v", h, want)
			}
			if !bytes.Equal(r.Content(), tt.content) {
				t.Errorf("Content = %q, want %q", r.Content(), tt.content)
			}
			if !bytes.Equal(r.Raw(), rec) {
				t.Errorf("Raw = % x, want the input record % x", r.Raw(), rec)
			}
			if _, err := r.Next(); err != io.EOF {
				t.Errorf("second Next = %v, want io.EOF", err)
			}
		})
	}
}

func TestReaderSkipsPaddingAndReturnsExactContent(t *testing.T) {
	// Three records back to back with various paddings: the content of
	// each must come back exactly and the padding of one must not leak
	// into the header of the next.
	recs := [][]byte{
		makeRecord(6, 1, []byte("hello"), 3),
		makeRecord(6, 1, []byte("12345678"), 0),
		makeRecord(7, 1, []byte("x"), 255),
		makeRecord(6, 1, nil, 0),
		makeRecord(3, 1, []byte{0, 0, 0, 0, 0, 0, 0, 0}, 0),
	}
	wantContent := []string{"hello", "12345678", "x", "", "\x00\x00\x00\x00\x00\x00\x00\x00"}
	wantType := []RecordType{TypeStdout, TypeStdout, TypeStderr, TypeStdout, TypeEndRequest}

	// A one-byte reader makes sure nothing depends on how the input is cut.
	for _, src := range []struct {
		name string
		r    func([]byte) io.Reader
	}{
		{"whole", func(b []byte) io.Reader { return bytes.NewReader(b) }},
		{"onebyte", func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) }},
		{"dataerr", func(b []byte) io.Reader { return iotest.DataErrReader(bytes.NewReader(b)) }},
	} {
		t.Run(src.name, func(t *testing.T) {
			r := NewReader(src.r(concat(recs...)))
			for i := range recs {
				h, err := r.Next()
				if err != nil {
					t.Fatalf("record %d: Next: %v", i, err)
				}
				if h.Type != wantType[i] {
					t.Errorf("record %d: type %v, want %v", i, h.Type, wantType[i])
				}
				if string(r.Content()) != wantContent[i] {
					t.Errorf("record %d: Content = %q, want %q", i, r.Content(), wantContent[i])
				}
				if !bytes.Equal(r.Raw(), recs[i]) {
					t.Errorf("record %d: Raw = % x, want % x", i, r.Raw(), recs[i])
				}
			}
			if _, err := r.Next(); err != io.EOF {
				t.Fatalf("Next at end = %v, want io.EOF", err)
			}
		})
	}
}

func TestReaderMaximalRecord(t *testing.T) {
	content := bytes.Repeat([]byte{'z'}, maxContent)
	rec := makeRecord(6, 1, content, 255)
	r := NewReader(bytes.NewReader(rec))
	h, err := r.Next()
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	if h.ContentLength != maxContent || h.PaddingLength != 255 {
		t.Fatalf("header = %+v", h)
	}
	if !bytes.Equal(r.Content(), content) {
		t.Error("content of a maximal record differs")
	}
	if !bytes.Equal(r.Raw(), rec) {
		t.Error("Raw of a maximal record differs from the input")
	}
}

func TestReaderEOFAtCleanBoundary(t *testing.T) {
	for _, tt := range []struct {
		name  string
		input []byte
		n     int // records before EOF
	}{
		{"empty stream", nil, 0},
		{"one record", makeRecord(6, 1, []byte("a"), 7), 1},
		{"two records", concat(makeRecord(6, 1, nil, 0), makeRecord(3, 1, make([]byte, 8), 0)), 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(tt.input))
			for i := 0; i < tt.n; i++ {
				if _, err := r.Next(); err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
			}
			_, err := r.Next()
			if err != io.EOF {
				t.Fatalf("Next = %v, want exactly io.EOF", err)
			}
			if errors.Is(err, ErrTruncated) {
				t.Fatal("a clean end must not be ErrTruncated")
			}
		})
	}
}

func TestReaderTruncated(t *testing.T) {
	full := makeRecord(6, 1, []byte("0123456789"), 6) // 8 + 10 + 6 = 24 bytes
	tests := []struct {
		name  string
		input []byte
		where string // text the error message should carry
	}{
		{"one byte of header", full[:1], "header"},
		{"seven bytes of header", full[:7], "header"},
		{"header only", full[:8], "STDOUT"},
		{"inside content", full[:13], "STDOUT"},
		{"inside padding", full[:20], "STDOUT"},
		{"one byte short", full[:23], "STDOUT"},
		{"after a good record, inside header", concat(makeRecord(6, 1, nil, 0), full[:3]), "header"},
		{"after a good record, inside content", concat(makeRecord(6, 1, nil, 0), full[:12]), "STDOUT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(tt.input))
			var err error
			for i := 0; i < 3 && err == nil; i++ {
				_, err = r.Next()
			}
			if err == nil {
				t.Fatal("no error for a truncated stream")
			}
			if !errors.Is(err, ErrTruncated) {
				t.Errorf("error %v does not wrap ErrTruncated", err)
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("error %v does not wrap io.ErrUnexpectedEOF", err)
			}
			if err == io.EOF || errors.Is(err, io.EOF) {
				t.Errorf("error %v must not be io.EOF", err)
			}
			if !strings.Contains(err.Error(), tt.where) {
				t.Errorf("error %q does not mention %q", err, tt.where)
			}
		})
	}
}

func TestReaderWrapsUnderlyingError(t *testing.T) {
	boom := errors.New("boom")
	for _, tt := range []struct {
		name  string
		input []byte
	}{
		{"before any byte", nil},
		{"inside header", []byte{1, 6, 0}},
		{"inside content", makeRecord(6, 1, []byte("abcdef"), 2)[:10]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := io.MultiReader(bytes.NewReader(tt.input), iotest.ErrReader(boom))
			_, err := NewReader(src).Next()
			if !errors.Is(err, boom) {
				t.Fatalf("Next = %v, want an error wrapping %v", err, boom)
			}
			if errors.Is(err, ErrTruncated) {
				t.Errorf("a read error %v must not pass for a truncation", err)
			}
		})
	}
}

func TestReaderVersionError(t *testing.T) {
	tests := []struct {
		name     string
		input    []byte
		version  byte
		httpLike bool
	}{
		{"HTTP response", []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 'H', true},
		{"HTTP 400", []byte("HTTP/1.1 400 Bad Request\r\n\r\n"), 'H', true},
		{"HTTP/1.0", []byte("HTTP/1.0 502 Bad Gateway\r\n\r\n"), 'H', true},
		{"HTTP GET request", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 'G', true},
		{"HTTP POST request", []byte("POST /index.php HTTP/1.1\r\n\r\n"), 'P', true},
		{"TLS handshake", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc}, 0x16, false},
		{"TLS alert", []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46, 0x00}, 0x15, false},
		{"version 0", withVersion(0, makeRecord(6, 1, []byte("ok"), 6)), 0, false},
		{"version 2", withVersion(2, makeRecord(6, 1, []byte("ok"), 6)), 2, false},
		{"version 0xFF", withVersion(0xFF, makeRecord(3, 1, make([]byte, 8), 0)), 0xFF, false},
		{"SSH banner", []byte("SSH-2.0-OpenSSH_9.6\r\n"), 'S', false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewReader(bytes.NewReader(tt.input)).Next()
			var ve *VersionError
			if !errors.As(err, &ve) {
				t.Fatalf("Next = %v, want a *VersionError", err)
			}
			if ve.Version() != tt.version {
				t.Errorf("Version = %#x, want %#x", ve.Version(), tt.version)
			}
			if !bytes.Equal(ve.Header[:], tt.input[:8]) {
				t.Errorf("Header = % x, want the first 8 bytes % x", ve.Header, tt.input[:8])
			}
			if ve.LooksLikeHTTP() != tt.httpLike {
				t.Errorf("LooksLikeHTTP = %v, want %v", ve.LooksLikeHTTP(), tt.httpLike)
			}
			if got := strings.Contains(err.Error(), "speaks HTTP"); got != tt.httpLike {
				t.Errorf("message %q: mentions HTTP = %v, want %v", err, got, tt.httpLike)
			}
			if !strings.Contains(err.Error(), "want 1") {
				t.Errorf("message %q does not say which version is wanted", err)
			}
			if errors.Is(err, ErrTruncated) {
				t.Errorf("a version error must not be ErrTruncated")
			}
		})
	}
}

func withVersion(v byte, rec []byte) []byte {
	rec[0] = v
	return rec
}

// repeatReader serves data over and over, without end and without
// allocating.
type repeatReader struct {
	data []byte
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.data[r.off:])
		n += c
		r.off = (r.off + c) % len(r.data)
	}
	return n, nil
}

func TestReaderDoesNotAllocatePerRecord(t *testing.T) {
	src := &repeatReader{data: concat(
		makeRecord(6, 1, bytes.Repeat([]byte("o"), 100), 4),
		makeRecord(7, 1, []byte("warn"), 4),
		makeRecord(4, 1, []byte("\x0b\x02SERVER_PORT80"), 7),
		makeRecord(6, 1, bytes.Repeat([]byte("b"), 65000), 0),
		makeRecord(6, 1, nil, 0),
	)}
	r := NewReader(src)
	// Warm up.
	for i := 0; i < 20; i++ {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
	}
	var failed error
	allocs := testing.AllocsPerRun(2000, func() {
		if _, err := r.Next(); err != nil && failed == nil {
			failed = err
		}
		_ = r.Content()
		_ = r.Raw()
	})
	if failed != nil {
		t.Fatal(failed)
	}
	if allocs != 0 {
		t.Fatalf("Next allocates %v times per record, want 0", allocs)
	}
}

func TestReaderBuffered(t *testing.T) {
	in := concat(makeRecord(6, 1, []byte("a"), 7), makeRecord(6, 1, []byte("b"), 7))
	r := NewReader(bytes.NewReader(in))
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if got := r.Buffered(); got != 16 {
		t.Errorf("Buffered after the first record = %d, want 16", got)
	}
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if got := r.Buffered(); got != 0 {
		t.Errorf("Buffered after the last record = %d, want 0", got)
	}
}

func TestRecordTypeString(t *testing.T) {
	tests := []struct {
		t     RecordType
		want  string
		known bool
		mgmt  bool
	}{
		{0, "type(0)", false, false},
		{TypeBeginRequest, "BEGIN_REQUEST", true, false},
		{TypeAbortRequest, "ABORT_REQUEST", true, false},
		{TypeEndRequest, "END_REQUEST", true, false},
		{TypeParams, "PARAMS", true, false},
		{TypeStdin, "STDIN", true, false},
		{TypeStdout, "STDOUT", true, false},
		{TypeStderr, "STDERR", true, false},
		{TypeData, "DATA", true, false},
		{TypeGetValues, "GET_VALUES", true, true},
		{TypeGetValuesResult, "GET_VALUES_RESULT", true, true},
		{TypeUnknownType, "UNKNOWN_TYPE", true, true},
		{12, "type(12)", false, false},
		{0x48, "type(72)", false, false},
		{255, "type(255)", false, false},
	}
	for _, tt := range tests {
		if got := tt.t.String(); got != tt.want {
			t.Errorf("RecordType(%d).String() = %q, want %q", uint8(tt.t), got, tt.want)
		}
		if got := tt.t.known(); got != tt.known {
			t.Errorf("RecordType(%d).known() = %v, want %v", uint8(tt.t), got, tt.known)
		}
		if got := tt.t.management(); got != tt.mgmt {
			t.Errorf("RecordType(%d).management() = %v, want %v", uint8(tt.t), got, tt.mgmt)
		}
	}
}

func TestRoleAndProtocolStatusString(t *testing.T) {
	for _, tt := range []struct {
		got, want string
	}{
		{RoleResponder.String(), "RESPONDER"},
		{RoleAuthorizer.String(), "AUTHORIZER"},
		{RoleFilter.String(), "FILTER"},
		{Role(0).String(), "role(0)"},
		{Role(4).String(), "role(4)"},
		{Role(65535).String(), "role(65535)"},
		{StatusRequestComplete.String(), "REQUEST_COMPLETE"},
		{StatusCantMPXConn.String(), "CANT_MPX_CONN"},
		{StatusOverloaded.String(), "OVERLOADED"},
		{StatusUnknownRole.String(), "UNKNOWN_ROLE"},
		{ProtocolStatus(4).String(), "status(4)"},
		{ProtocolStatus(255).String(), "status(255)"},
	} {
		if tt.got != tt.want {
			t.Errorf("String() = %q, want %q", tt.got, tt.want)
		}
	}
}
