package fcgi

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// The four FCGI_NameValuePair layouts of the specification (section 3.4):
// 11, 14, 41 and 44, i.e. one-byte (high bit 0) or four-byte (high bit 1,
// 31-bit big-endian) lengths for the name and the value.
var pairTables = []struct {
	name        string
	encoded     []byte
	pname, pval string
}{
	{
		"11 short name short value",
		[]byte("\x0b\x02SERVER_PORT80"),
		"SERVER_PORT", "80",
	},
	{
		"11 empty value",
		[]byte("\x0c\x00QUERY_STRING"),
		"QUERY_STRING", "",
	},
	{
		"11 empty name and value",
		[]byte{0, 0},
		"", "",
	},
	{
		"11 127 byte value",
		append([]byte("\x01\x7fV"), strings.Repeat("v", 127)...),
		"V", strings.Repeat("v", 127),
	},
	{
		"14 short name 128 byte value",
		append([]byte("\x01\x80\x00\x00\x80V"), strings.Repeat("v", 128)...),
		"V", strings.Repeat("v", 128),
	},
	{
		"41 128 byte name short value",
		append(append([]byte("\x80\x00\x00\x80\x01"), strings.Repeat("n", 128)...), 'x'),
		strings.Repeat("n", 128), "x",
	},
	{
		"44 both long",
		append(append([]byte("\x80\x00\x01\x00\x80\x00\x01\x2c"), strings.Repeat("n", 256)...), strings.Repeat("v", 300)...),
		strings.Repeat("n", 256), strings.Repeat("v", 300),
	},
	{
		"14 70000 byte value",
		append([]byte("\x0a\x80\x01\x11\x70HTTP_COOKI"), strings.Repeat("c", 70000)...),
		"HTTP_COOKI", strings.Repeat("c", 70000),
	},
}

func TestAppendPairMatchesSpecEncoding(t *testing.T) {
	for _, tt := range pairTables {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendPair(nil, tt.pname, tt.pval)
			if !bytes.Equal(got, tt.encoded) {
				t.Fatalf("AppendPair = % x..., want % x...", head(got), head(tt.encoded))
			}
			prefix := []byte("keep")
			got = AppendPair(prefix, tt.pname, tt.pval)
			if !bytes.Equal(got[:4], []byte("keep")) || !bytes.Equal(got[4:], tt.encoded) {
				t.Fatal("AppendPair does not append after existing bytes")
			}
		})
	}
}

func TestForEachPairDecodesSpecEncoding(t *testing.T) {
	for _, tt := range pairTables {
		t.Run(tt.name, func(t *testing.T) {
			pairs, err := parsePairs(tt.encoded)
			if err != nil {
				t.Fatalf("parsePairs: %v", err)
			}
			want := []Pair{{tt.pname, tt.pval}}
			if !reflect.DeepEqual(pairs, want) {
				t.Fatalf("parsePairs = %q, want %q", shortPairs(pairs), shortPairs(want))
			}
		})
	}
}

func shortPairs(ps []Pair) []Pair {
	out := make([]Pair, len(ps))
	for i, p := range ps {
		if len(p.Name) > 20 {
			p.Name = p.Name[:20] + "..."
		}
		if len(p.Value) > 20 {
			p.Value = p.Value[:20] + "..."
		}
		out[i] = p
	}
	return out
}

func TestPairLengthBoundary(t *testing.T) {
	for _, tt := range []struct {
		n       int
		lenSize int
	}{
		{0, 1}, {1, 1}, {126, 1}, {127, 1}, {128, 4}, {129, 4}, {255, 4}, {256, 4}, {65535, 4}, {65536, 4}, {70000, 4},
	} {
		name := strings.Repeat("N", tt.n)
		value := strings.Repeat("v", tt.n)
		b := AppendPair(nil, name, value)
		if want := 2*tt.lenSize + 2*tt.n; len(b) != want {
			t.Errorf("n=%d: encoded %d bytes, want %d (%d-byte lengths)", tt.n, len(b), want, tt.lenSize)
		}
		if tt.lenSize == 4 && b[0]&0x80 == 0 {
			t.Errorf("n=%d: four-byte length without the high bit", tt.n)
		}
		if tt.lenSize == 1 && b[0] != byte(tt.n) {
			t.Errorf("n=%d: one-byte length %d", tt.n, b[0])
		}
		pairs, err := parsePairs(b)
		if err != nil || len(pairs) != 1 || pairs[0].Name != name || pairs[0].Value != value {
			t.Errorf("n=%d: round trip gave %d pairs, %v", tt.n, len(pairs), err)
		}
	}
}

func TestForEachPairAcceptsFourByteLengthForShortStrings(t *testing.T) {
	// The specification allows the four-byte form for any length; a peer
	// may use it even for 5 bytes.
	b := []byte("\x80\x00\x00\x05\x80\x00\x00\x02HELLOhi")
	pairs, err := parsePairs(b)
	if err != nil || !reflect.DeepEqual(pairs, []Pair{{"HELLO", "hi"}}) {
		t.Fatalf("parsePairs = %q, %v", pairs, err)
	}
}

func TestForEachPairManyPairsInOrder(t *testing.T) {
	want := []Pair{
		{"SCRIPT_FILENAME", "/var/www/html/index.php"},
		{"QUERY_STRING", ""},
		{"REQUEST_METHOD", "GET"},
		{"HTTP_COOKIE", strings.Repeat("k=v; ", 40)},
		{"", "empty name"},
	}
	var b []byte
	for _, p := range want {
		b = AppendPair(b, p.Name, p.Value)
	}
	var got []Pair
	err := ForEachPair(b, func(name, value []byte) bool {
		got = append(got, Pair{string(name), string(value)})
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestForEachPairSlicesAliasInput(t *testing.T) {
	b := AppendPair(nil, "NAME", "value")
	ForEachPair(b, func(name, value []byte) bool {
		name[0] = 'X'
		return true
	})
	if b[2] != 'X' {
		t.Error("name slice does not alias the input, as documented")
	}
}

func TestForEachPairStopsWhenFnReturnsFalse(t *testing.T) {
	var b []byte
	for _, n := range []string{"A", "B", "C", "D"} {
		b = AppendPair(b, n, "x")
	}
	// A malformed tail after the stop point must not be reached.
	b = append(b, 0x80)
	for stopAt := 1; stopAt <= 4; stopAt++ {
		var seen []string
		err := ForEachPair(b, func(name, value []byte) bool {
			seen = append(seen, string(name))
			return len(seen) < stopAt
		})
		if err != nil {
			t.Errorf("stopAt=%d: err = %v, want nil", stopAt, err)
		}
		if len(seen) != stopAt {
			t.Errorf("stopAt=%d: fn called for %v", stopAt, seen)
		}
	}
}

func TestForEachPairEmptyInput(t *testing.T) {
	called := false
	if err := ForEachPair(nil, func(_, _ []byte) bool { called = true; return true }); err != nil || called {
		t.Fatalf("ForEachPair(nil) = %v, called %v", err, called)
	}
	pairs, err := parsePairs([]byte{})
	if err != nil || len(pairs) != 0 {
		t.Fatalf("parsePairs(empty) = %v, %v", pairs, err)
	}
}

func TestForEachPairMalformed(t *testing.T) {
	good := AppendPair(nil, "GOOD", "1") // 7 bytes
	tests := []struct {
		name      string
		input     []byte
		offset    int
		reason    string
		goodPairs int
	}{
		{"cut in one-byte value length", []byte{0x04}, 0, "value length cut short", 0},
		{"cut in four-byte name length", []byte{0x80, 0x00, 0x01}, 0, "name length cut short", 0},
		{"cut in four-byte name length, one byte", []byte{0x80}, 0, "name length cut short", 0},
		{"cut in four-byte value length", []byte{0x04, 0x80, 0x00}, 0, "value length cut short", 0},
		{"cut in the name", []byte("\x0b\x02SERVER_"), 0, "overrun", 0},
		{"cut in the value", []byte("\x0b\x02SERVER_PORT8"), 0, "overrun", 0},
		{"name overruns", []byte("\x7f\x00abc"), 0, "overrun", 0},
		{"four-byte length overruns", []byte("\xff\xff\xff\xff\x00ab"), 0, "overrun", 0},
		{"value overruns by one", []byte("\x01\x02Nv"), 0, "overrun", 0},
		{"good then cut in length", concat(good, []byte{0x80, 0x00}), 7, "name length cut short", 1},
		{"good then cut in name", concat(good, []byte("\x05\x01AB")), 7, "overrun", 1},
		{"two good then overrun", concat(good, good, []byte("\x01\x7fNvvv")), 14, "overrun", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			err := ForEachPair(tt.input, func(_, _ []byte) bool { calls++; return true })
			var pe *pairError
			if !errors.As(err, &pe) {
				t.Fatalf("ForEachPair = %v, want a *pairError", err)
			}
			if pe.Offset != tt.offset {
				t.Errorf("Offset = %d, want %d", pe.Offset, tt.offset)
			}
			if !strings.Contains(pe.Reason, tt.reason) {
				t.Errorf("Reason = %q, want it to contain %q", pe.Reason, tt.reason)
			}
			if calls != tt.goodPairs {
				t.Errorf("fn called %d times before the error, want %d", calls, tt.goodPairs)
			}
			if !strings.Contains(err.Error(), "byte "+itoa(tt.offset)) {
				t.Errorf("message %q does not give the offset", err)
			}
			pairs, perr := parsePairs(tt.input)
			if !errors.As(perr, &pe) || len(pairs) != tt.goodPairs {
				t.Errorf("parsePairs = %d pairs, %v", len(pairs), perr)
			}
		})
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// TestParamsBufferJoinsPairSplitAcrossRecords frames a PARAMS stream as two
// records cut in the middle of a pair (and once in the middle of a
// four-byte length), reads them back and decodes through a ParamsBuffer.
func TestParamsBufferJoinsPairSplitAcrossRecords(t *testing.T) {
	want := []Pair{
		{"SCRIPT_FILENAME", "/srv/www/index.php"},
		{"HTTP_COOKIE", strings.Repeat("session=abcdef; ", 20)},
		{"REQUEST_METHOD", "POST"},
	}
	var stream []byte
	for _, p := range want {
		stream = AppendPair(stream, p.Name, p.Value)
	}
	cookieAt := len(AppendPair(nil, want[0].Name, want[0].Value))
	for _, cut := range []int{
		1,                // inside the first name length's pair
		cookieAt + 2,     // inside HTTP_COOKIE's four-byte value length
		cookieAt + 5 + 4, // inside HTTP_COOKIE's name
		cookieAt + 40,    // inside HTTP_COOKIE's value
		len(stream) - 1,  // inside the last value
	} {
		var wire bytes.Buffer
		w := NewWriter(&wire)
		w.WriteRecord(TypeParams, 1, stream[:cut])
		w.WriteRecord(TypeParams, 1, stream[cut:])
		w.EndStream(TypeParams, 1)
		w.Flush()

		r := NewReader(&wire)
		var pb ParamsBuffer
		for i := 0; ; i++ {
			h, err := r.Next()
			if err != nil {
				t.Fatalf("cut=%d: %v", cut, err)
			}
			if h.ContentLength == 0 {
				break
			}
			// The first record on its own ends inside a pair.
			if _, err := parsePairs(r.Content()); i == 0 && err == nil {
				t.Errorf("cut=%d: a record cut mid-pair decoded on its own", cut)
			}
			if err := pb.Append(r.Content()); err != nil {
				t.Fatal(err)
			}
		}
		if pb.Len() != len(stream) || !bytes.Equal(pb.Bytes(), stream) {
			t.Fatalf("cut=%d: buffer holds %d bytes, want %d", cut, pb.Len(), len(stream))
		}
		var got []Pair
		if err := pb.ForEach(func(n, v []byte) bool {
			got = append(got, Pair{string(n), string(v)})
			return true
		}); err != nil {
			t.Fatalf("cut=%d: ForEach: %v", cut, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("cut=%d: got %q, want %q", cut, got, want)
		}
	}
}

func TestParamsBufferLimit(t *testing.T) {
	pb := ParamsBuffer{Limit: 10}
	if err := pb.Append([]byte("12345")); err != nil {
		t.Fatal(err)
	}
	if err := pb.Append([]byte("67890")); err != nil {
		t.Fatalf("reaching the limit exactly: %v", err)
	}
	err := pb.Append([]byte("X"))
	if !errors.Is(err, ErrParamsTooLarge) {
		t.Fatalf("Append past the limit = %v, want an error wrapping ErrParamsTooLarge", err)
	}
	if !strings.Contains(err.Error(), "10") {
		t.Errorf("error %q does not give the limit", err)
	}
	if got := string(pb.Bytes()); got != "1234567890" {
		t.Errorf("after the failed Append the buffer holds %q, want the earlier content", got)
	}
	if pb.Len() != 10 {
		t.Errorf("Len = %d, want 10", pb.Len())
	}
	// A record that alone exceeds the limit is refused whole.
	pb2 := ParamsBuffer{Limit: 4}
	if err := pb2.Append([]byte("12345")); !errors.Is(err, ErrParamsTooLarge) || pb2.Len() != 0 {
		t.Errorf("oversized first record: err %v, len %d", err, pb2.Len())
	}
}

func TestParamsBufferZeroValueHasNoLimit(t *testing.T) {
	var pb ParamsBuffer
	big := make([]byte, 1<<20)
	for i := 0; i < 4; i++ {
		if err := pb.Append(big); err != nil {
			t.Fatal(err)
		}
	}
	if pb.Len() != 4<<20 {
		t.Fatalf("Len = %d", pb.Len())
	}
}

func TestParamsBufferReset(t *testing.T) {
	pb := ParamsBuffer{Limit: 64}
	pb.Append(AppendPair(nil, "A", "1"))
	pb.Append(make([]byte, 60))
	if err := pb.Append([]byte("x")); !errors.Is(err, ErrParamsTooLarge) {
		t.Fatalf("want the limit hit, got %v", err)
	}
	pb.Reset()
	if pb.Len() != 0 || len(pb.Bytes()) != 0 {
		t.Fatalf("after Reset Len = %d", pb.Len())
	}
	if pb.Limit != 64 {
		t.Errorf("Reset changed Limit to %d", pb.Limit)
	}
	if err := pb.ForEach(func(_, _ []byte) bool { t.Error("fn called on an empty buffer"); return true }); err != nil {
		t.Fatal(err)
	}
	// The next request starts afresh and may use the whole limit again.
	next := AppendPair(nil, "B", "2")
	if err := pb.Append(next); err != nil {
		t.Fatal(err)
	}
	pairs, err := parsePairs(pb.Bytes())
	if err != nil || !reflect.DeepEqual(pairs, []Pair{{"B", "2"}}) {
		t.Fatalf("after Reset: %q, %v", pairs, err)
	}
	// Reset keeps the memory.
	capBefore := cap(pb.Bytes())
	pb.Reset()
	if cap(pb.Bytes()) != capBefore {
		t.Errorf("Reset dropped the buffer: cap %d -> %d", capBefore, cap(pb.Bytes()))
	}
}

func TestParamsBufferAppendDoesNotAliasInput(t *testing.T) {
	var pb ParamsBuffer
	content := []byte("\x01\x01AB")
	pb.Append(content)
	// The Reader reuses its buffer; the ParamsBuffer must have copied.
	copy(content, "XXXX")
	if string(pb.Bytes()) != "\x01\x01AB" {
		t.Fatalf("buffer changed with its input: %q", pb.Bytes())
	}
}

// TestParamsThroughReaderBufferReuse checks that content appended from
// Reader.Content survives the Reader's next record.
func TestParamsThroughReaderBufferReuse(t *testing.T) {
	in := concat(
		makeRecord(4, 1, []byte("\x01\x01A1"), 4),
		makeRecord(4, 1, []byte("\x01\x01B2"), 4),
		makeRecord(4, 1, nil, 0),
	)
	r := NewReader(bytes.NewReader(in))
	var pb ParamsBuffer
	for {
		_, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		pb.Append(r.Content())
	}
	pairs, err := parsePairs(pb.Bytes())
	if err != nil || !reflect.DeepEqual(pairs, []Pair{{"A", "1"}, {"B", "2"}}) {
		t.Fatalf("got %q, %v", pairs, err)
	}
}

// parsePairs decodes every pair in b into new strings.
func parsePairs(b []byte) ([]Pair, error) {
	var pairs []Pair
	err := ForEachPair(b, func(name, value []byte) bool {
		pairs = append(pairs, Pair{string(name), string(value)})
		return true
	})
	return pairs, err
}
