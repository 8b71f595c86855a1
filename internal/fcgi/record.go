package fcgi

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Header is a decoded record header.
type Header struct {
	Version       uint8
	Type          RecordType
	RequestID     uint16
	ContentLength uint16
	PaddingLength uint8
}

// put encodes h into b, which must hold HeaderLen bytes.
func (h Header) put(b []byte) {
	b[0] = h.Version
	b[1] = byte(h.Type)
	binary.BigEndian.PutUint16(b[2:4], h.RequestID)
	binary.BigEndian.PutUint16(b[4:6], h.ContentLength)
	b[6] = h.PaddingLength
	b[7] = 0
}

func decodeHeader(b []byte) Header {
	return Header{
		Version:       b[0],
		Type:          RecordType(b[1]),
		RequestID:     binary.BigEndian.Uint16(b[2:4]),
		ContentLength: binary.BigEndian.Uint16(b[4:6]),
		PaddingLength: b[6],
	}
}

// paddingFor returns the padding that aligns n content bytes to 8.
func paddingFor(n int) uint8 {
	return uint8(-n & 7)
}

// VersionError reports a record header whose version byte is not 1. It keeps
// the header bytes so that callers can tell what the peer really speaks.
type VersionError struct {
	Header [HeaderLen]byte
}

// Version returns the version byte that was seen.
func (e *VersionError) Version() byte { return e.Header[0] }

// LooksLikeHTTP reports whether the bytes are the start of an HTTP response
// ("HTTP/1.") or request, as when an HTTP server listens on the port.
func (e *VersionError) LooksLikeHTTP() bool {
	s := string(e.Header[:])
	for _, p := range []string{"HTTP/", "GET ", "POST ", "HEAD ", "PUT "} {
		if len(s) >= len(p) && s[:len(p)] == p {
			return true
		}
	}
	return false
}

func (e *VersionError) Error() string {
	msg := fmt.Sprintf("fcgi: record header has version %d, want 1 (first bytes %q)", e.Version(), e.Header[:])
	if e.LooksLikeHTTP() {
		msg += ": the peer speaks HTTP, not FastCGI"
	}
	return msg
}

// headerError is a failure to read a record header, such as the connection
// closing under the reader. Every connection a relay closes ends in one, so
// it is a plain wrapper rather than a formatted error.
type headerError struct{ err error }

func (e *headerError) Error() string { return "fcgi: reading record header: " + e.err.Error() }
func (e *headerError) Unwrap() error { return e.err }

// ErrTruncated is wrapped by the error the Reader returns when the stream ends
// inside a record.
var ErrTruncated = errors.New("stream ended inside a record")

// Reader reads records from a byte stream. It reuses one buffer for every
// record, so the content returned by Content is valid only until the next call
// to Next.
type Reader struct {
	br  *bufio.Reader
	buf []byte // header, content and padding of the current record
	hdr Header
}

// readerBufSize holds a whole maximal record.
const readerBufSize = HeaderLen + maxContent + 255

// NewReader returns a Reader that reads from r through its own buffer.
func NewReader(r io.Reader) *Reader {
	return NewReaderSize(r, 16<<10)
}

// NewReaderSize returns a Reader whose read buffer has at least size bytes.
// The record buffer grows with the largest record seen, so a Reader that only
// ever sees small records stays small.
func NewReaderSize(r io.Reader, size int) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, size), buf: make([]byte, 0, 512)}
}

// Next reads the next record and returns its header. At a clean end of the
// stream between records it returns io.EOF; inside a record it returns an
// error wrapping ErrTruncated (and io.ErrUnexpectedEOF). Errors from the
// underlying reader are returned wrapped.
func (r *Reader) Next() (Header, error) {
	r.buf = r.buf[:cap(r.buf)]
	if _, err := io.ReadFull(r.br, r.buf[:HeaderLen]); err != nil {
		if err == io.EOF {
			return Header{}, io.EOF
		}
		if err == io.ErrUnexpectedEOF {
			return Header{}, fmt.Errorf("fcgi: reading record header: %w (%w)", ErrTruncated, io.ErrUnexpectedEOF)
		}
		return Header{}, &headerError{err}
	}
	h := decodeHeader(r.buf)
	if h.Version != version1 {
		var ve VersionError
		copy(ve.Header[:], r.buf[:HeaderLen])
		return Header{}, &ve
	}
	n := HeaderLen + int(h.ContentLength) + int(h.PaddingLength)
	if n > len(r.buf) {
		// Grow in steps, so that a stream of growing records does not
		// reallocate each time; the largest record fits readerBufSize.
		grown := make([]byte, min(max(n, 2*len(r.buf)), readerBufSize))
		copy(grown, r.buf[:HeaderLen])
		r.buf = grown
	}
	if _, err := io.ReadFull(r.br, r.buf[HeaderLen:n]); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return Header{}, fmt.Errorf("fcgi: reading %s record of %d bytes: %w (%w)", h.Type, h.ContentLength, ErrTruncated, io.ErrUnexpectedEOF)
		}
		return Header{}, fmt.Errorf("fcgi: reading %s record: %w", h.Type, err)
	}
	r.hdr = h
	return h, nil
}

// Content returns the content of the record read by the last call to Next.
func (r *Reader) Content() []byte {
	return r.buf[HeaderLen : HeaderLen+int(r.hdr.ContentLength)]
}

// Raw returns the whole record read by the last call to Next, header and
// padding included, ready to be forwarded unchanged.
func (r *Reader) Raw() []byte {
	return r.buf[:HeaderLen+int(r.hdr.ContentLength)+int(r.hdr.PaddingLength)]
}

// Buffered returns the number of bytes that can be read without waiting for
// the peer. A relay uses it to flush only when no further record is ready.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// Reset discards any buffered data and makes r read from src, keeping its
// buffers, so that readers can be pooled.
func (r *Reader) Reset(src io.Reader) {
	r.br.Reset(src)
	r.hdr = Header{}
}

// Writer writes records to a byte stream through a buffer. Nothing reaches
// the stream before Flush, or before the buffer fills.
type Writer struct {
	bw   *bufio.Writer
	hdr  [HeaderLen]byte
	body [8]byte // BEGIN_REQUEST and END_REQUEST bodies, kept off the heap
}

// NewWriter returns a Writer that writes to w.
func NewWriter(w io.Writer) *Writer {
	return NewWriterSize(w, 32<<10)
}

// NewWriterSize returns a Writer whose buffer has at least size bytes.
// Records larger than the buffer go to w directly when the buffer is empty.
func NewWriterSize(w io.Writer, size int) *Writer {
	return &Writer{bw: bufio.NewWriterSize(w, size)}
}

var zeroPadding [8]byte

// WriteRecord writes one record of type t for request id with the given
// content, padded to a multiple of 8 bytes. Content longer than maxContent is
// an error; use WriteStream for data of any length.
func (w *Writer) WriteRecord(t RecordType, id uint16, content []byte) error {
	if len(content) > maxContent {
		return fmt.Errorf("fcgi: %s record content of %d bytes exceeds %d", t, len(content), maxContent)
	}
	pad := paddingFor(len(content))
	if len(content)+int(pad) > maxContent {
		// php-fpm rejects records whose content and padding together
		// exceed 65535; padding is only a recommendation.
		pad = 0
	}
	Header{Version: version1, Type: t, RequestID: id, ContentLength: uint16(len(content)), PaddingLength: pad}.put(w.hdr[:])
	w.bw.Write(w.hdr[:])
	w.bw.Write(content)
	_, err := w.bw.Write(zeroPadding[:pad])
	return err
}

// WriteStream writes p as records of type t for request id, each holding at
// most MaxWriteContent bytes. It does not end the stream: see EndStream.
// Writing an empty p writes nothing, since an empty record would end the
// stream.
func (w *Writer) WriteStream(t RecordType, id uint16, p []byte) error {
	for len(p) > 0 {
		n := min(len(p), MaxWriteContent)
		if err := w.WriteRecord(t, id, p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// AppendRecord appends one record of type t for request id to dst, padded as
// WriteRecord pads. Content longer than maxContent is cut off, so callers
// keep to MaxWriteContent.
func AppendRecord(dst []byte, t RecordType, id uint16, content []byte) []byte {
	content = content[:min(len(content), maxContent)]
	pad := paddingFor(len(content))
	if len(content)+int(pad) > maxContent {
		pad = 0
	}
	var h [HeaderLen]byte
	Header{Version: version1, Type: t, RequestID: id, ContentLength: uint16(len(content)), PaddingLength: pad}.put(h[:])
	dst = append(dst, h[:]...)
	dst = append(dst, content...)
	return append(dst, zeroPadding[:pad]...)
}

// EndStream writes the empty record that ends stream t of request id.
func (w *Writer) EndStream(t RecordType, id uint16) error {
	return w.WriteRecord(t, id, nil)
}

// WriteRaw writes bytes that already form whole records, such as Reader.Raw.
func (w *Writer) WriteRaw(b []byte) error {
	_, err := w.bw.Write(b)
	return err
}

// WriteBeginRequest writes a BEGIN_REQUEST record.
func (w *Writer) WriteBeginRequest(id uint16, b BeginRequest) error {
	b.put(w.body[:])
	return w.WriteRecord(TypeBeginRequest, id, w.body[:])
}

// WriteEndRequest writes an END_REQUEST record.
func (w *Writer) WriteEndRequest(id uint16, e EndRequest) error {
	e.put(w.body[:])
	return w.WriteRecord(TypeEndRequest, id, w.body[:])
}

// Flush writes any buffered records to the stream.
func (w *Writer) Flush() error { return w.bw.Flush() }

// Buffered returns the number of bytes waiting for Flush.
func (w *Writer) Buffered() int { return w.bw.Buffered() }

// Reset discards any unflushed data and makes w write to dst, keeping its
// buffer, so that writers can be pooled.
func (w *Writer) Reset(dst io.Writer) { w.bw.Reset(dst) }
