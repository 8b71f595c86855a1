package fcgi

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// rawRecord is a record split out of a byte stream by hand, without the
// package's Reader.
type rawRecord struct {
	version byte
	typ     byte
	id      uint16
	content []byte
	padding []byte
	reserve byte
}

// splitRecords cuts b into records by reading the header fields directly.
func splitRecords(t *testing.T, b []byte) []rawRecord {
	t.Helper()
	var recs []rawRecord
	for len(b) > 0 {
		if len(b) < 8 {
			t.Fatalf("stream ends with %d bytes of header: % x", len(b), b)
		}
		clen := int(b[4])<<8 | int(b[5])
		plen := int(b[6])
		if len(b) < 8+clen+plen {
			t.Fatalf("stream ends inside a record of %d+%d bytes", clen, plen)
		}
		recs = append(recs, rawRecord{
			version: b[0],
			typ:     b[1],
			id:      uint16(b[2])<<8 | uint16(b[3]),
			content: b[8 : 8+clen],
			padding: b[8+clen : 8+clen+plen],
			reserve: b[7],
		})
		b = b[8+clen+plen:]
	}
	return recs
}

func TestWriteRecordPadsToEight(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 100, 1000, 65527, 65528} {
		var out bytes.Buffer
		w := NewWriter(&out)
		content := bytes.Repeat([]byte{'c'}, n)
		if err := w.WriteRecord(TypeStdout, 0x0203, content); err != nil {
			t.Fatalf("n=%d: WriteRecord: %v", n, err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		wantPad := (8 - n%8) % 8
		want := makeRecord(6, 0x0203, content, wantPad)
		for i := 8 + n; i < len(want); i++ {
			want[i] = 0 // the writer pads with zero bytes
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("n=%d: wrote %d bytes % x..., want %d bytes % x...", n, out.Len(), head(out.Bytes()), len(want), head(want))
		}
		if out.Len()%8 != 0 {
			t.Errorf("n=%d: record of %d bytes is not a multiple of 8", n, out.Len())
		}
	}
}

func TestWriteRecordNeverExceedsWhatPHPFPMAccepts(t *testing.T) {
	for _, n := range []int{65529, 65530, 65534, 65535} {
		var out bytes.Buffer
		w := NewWriter(&out)
		if err := w.WriteRecord(TypeStdout, 1, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		if out.Len()-8 > maxContent {
			t.Errorf("n=%d: content+padding = %d, php-fpm rejects more than %d", n, out.Len()-8, maxContent)
		}
	}
}

func head(b []byte) []byte {
	if len(b) > 16 {
		return b[:16]
	}
	return b
}

func TestWriteRecordByteTable(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out)
	if err := w.WriteRecord(TypeStderr, 1, []byte("oops")); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0x01, 0x07, 0x00, 0x01, 0x00, 0x04, 0x04, 0x00,
		'o', 'o', 'p', 's', 0, 0, 0, 0,
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("got % x, want % x", out.Bytes(), want)
	}
}

func TestWriteRecordContentLimit(t *testing.T) {
	t.Run("65535 accepted", func(t *testing.T) {
		var out bytes.Buffer
		w := NewWriter(&out)
		content := bytes.Repeat([]byte{'m'}, maxContent)
		if err := w.WriteRecord(TypeStdout, 1, content); err != nil {
			t.Fatalf("WriteRecord of %d bytes: %v", len(content), err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		recs := splitRecords(t, out.Bytes())
		if len(recs) != 1 || !bytes.Equal(recs[0].content, content) {
			t.Fatalf("got %d records, want one holding the content", len(recs))
		}
		// Padding to 8 would make content+padding 65536, which php-fpm
		// refuses (fcgi_read_request: len + padding > FCGI_MAX_LENGTH),
		// so such records go unpadded.
		if len(recs[0].padding) != 0 {
			t.Errorf("padding = %d, want 0", len(recs[0].padding))
		}
	})
	t.Run("65536 rejected", func(t *testing.T) {
		var out bytes.Buffer
		w := NewWriter(&out)
		err := w.WriteRecord(TypeStdout, 1, make([]byte, maxContent+1))
		if err == nil {
			t.Fatal("WriteRecord of 65536 bytes succeeded")
		}
		for _, s := range []string{"STDOUT", "65536", "65535"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not mention %q", err, s)
			}
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if out.Len() != 0 {
			t.Errorf("a rejected record wrote %d bytes", out.Len())
		}
	})
}

func TestWriteStreamSplitsIntoBoundedRecords(t *testing.T) {
	for _, n := range []int{1, 7, 8, MaxWriteContent - 1, MaxWriteContent, MaxWriteContent + 1, 200000, 3 * MaxWriteContent} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i * 7)
		}
		var out bytes.Buffer
		w := NewWriter(&out)
		if err := w.WriteStream(TypeStdin, 9, data); err != nil {
			t.Fatalf("n=%d: WriteStream: %v", n, err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		recs := splitRecords(t, out.Bytes())
		wantRecs := (n + MaxWriteContent - 1) / MaxWriteContent
		if len(recs) != wantRecs {
			t.Errorf("n=%d: %d records, want %d", n, len(recs), wantRecs)
		}
		var got []byte
		for i, r := range recs {
			if r.version != 1 || r.typ != 5 || r.id != 9 || r.reserve != 0 {
				t.Errorf("n=%d: record %d header v=%d t=%d id=%d reserved=%d", n, i, r.version, r.typ, r.id, r.reserve)
			}
			if len(r.content) == 0 {
				t.Errorf("n=%d: record %d is empty and would end the stream", n, i)
			}
			if len(r.content) > MaxWriteContent {
				t.Errorf("n=%d: record %d holds %d bytes, more than %d", n, i, len(r.content), MaxWriteContent)
			}
			if len(r.content)+len(r.padding) > maxContent {
				t.Errorf("n=%d: record %d content+padding = %d, more than 65535", n, i, len(r.content)+len(r.padding))
			}
			if (len(r.content)+len(r.padding))%8 != 0 {
				t.Errorf("n=%d: record %d is not aligned to 8", n, i)
			}
			got = append(got, r.content...)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("n=%d: records do not carry the data in order", n)
		}
	}
}

func TestWriteStreamEmptyWritesNothing(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out)
	if err := w.WriteStream(TypeStdout, 1, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteStream(TypeStdout, 1, []byte{}); err != nil {
		t.Fatal(err)
	}
	if w.Buffered() != 0 {
		t.Errorf("empty WriteStream buffered %d bytes", w.Buffered())
	}
	w.Flush()
	if out.Len() != 0 {
		t.Errorf("empty WriteStream wrote % x; an empty record would end the stream", out.Bytes())
	}
}

func TestEndStreamWritesEmptyRecord(t *testing.T) {
	for _, typ := range []RecordType{TypeParams, TypeStdin, TypeStdout, TypeStderr, TypeData} {
		var out bytes.Buffer
		w := NewWriter(&out)
		if err := w.EndStream(typ, 0xABCD); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		want := []byte{1, byte(typ), 0xAB, 0xCD, 0, 0, 0, 0}
		if !bytes.Equal(out.Bytes(), want) {
			t.Errorf("EndStream(%v) wrote % x, want % x", typ, out.Bytes(), want)
		}
	}
}

func TestWriterBuffersUntilFlush(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out)
	if err := w.WriteRecord(TypeStdout, 1, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if out.Len() != 0 {
		t.Errorf("%d bytes reached the stream before Flush", out.Len())
	}
	if w.Buffered() != 16 {
		t.Errorf("Buffered = %d, want 16", w.Buffered())
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if out.Len() != 16 || w.Buffered() != 0 {
		t.Errorf("after Flush: stream %d bytes, buffered %d", out.Len(), w.Buffered())
	}
}

func TestWriteRawForwardsRecordsUnchanged(t *testing.T) {
	// A record read with padding the writer would not choose (255 bytes)
	// must be forwarded byte for byte.
	in := concat(makeRecord(6, 3, []byte("abc"), 255), makeRecord(6, 3, nil, 0))
	r := NewReader(bytes.NewReader(in))
	var out bytes.Buffer
	w := NewWriter(&out)
	for {
		_, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WriteRaw(r.Raw()); err != nil {
			t.Fatal(err)
		}
	}
	w.Flush()
	if !bytes.Equal(out.Bytes(), in) {
		t.Fatalf("forwarded % x, want % x", out.Bytes(), in)
	}
}

type failingWriter struct{ err error }

func (f failingWriter) Write([]byte) (int, error) { return 0, f.err }

func TestWriterReportsStreamErrors(t *testing.T) {
	boom := errors.New("boom")
	w := NewWriter(failingWriter{boom})
	if err := w.WriteRecord(TypeStdout, 1, []byte("x")); err != nil {
		t.Fatalf("buffered WriteRecord = %v, want nil", err)
	}
	if err := w.Flush(); !errors.Is(err, boom) {
		t.Fatalf("Flush = %v, want %v", err, boom)
	}
	// The error sticks: a record that overflows the buffer reports it.
	if err := w.WriteStream(TypeStdout, 1, make([]byte, 100000)); !errors.Is(err, boom) {
		t.Fatalf("WriteStream after a failed Flush = %v, want %v", err, boom)
	}
}

// TestWriterReaderRoundTrip checks that what the Writer frames the Reader
// reads back unchanged.
func TestWriterReaderRoundTrip(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out)
	data := bytes.Repeat([]byte("abcdefghijk"), 20000)
	w.WriteBeginRequest(1, BeginRequest{Role: RoleResponder, Flags: FlagKeepConn})
	w.WriteStream(TypeStdin, 1, data)
	w.EndStream(TypeStdin, 1)
	w.WriteEndRequest(1, EndRequest{AppStatus: 5})
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&out)
	var got []byte
	var types []RecordType
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, h.Type)
		if h.Type == TypeStdin {
			got = append(got, r.Content()...)
		}
	}
	if !bytes.Equal(got, data) {
		t.Error("STDIN differs after a round trip")
	}
	if types[0] != TypeBeginRequest || types[len(types)-1] != TypeEndRequest {
		t.Errorf("types = %v", types)
	}
}
