package fcgi

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Pair is one name-value pair of a PARAMS or GET_VALUES stream.
type Pair struct {
	Name, Value string
}

// maxPairLen is the largest length the 4-byte encoding can express.
const maxPairLen = 1<<31 - 1

// AppendPair appends the encoding of one name-value pair to dst.
func AppendPair(dst []byte, name, value string) []byte {
	dst = appendLen(dst, len(name))
	dst = appendLen(dst, len(value))
	dst = append(dst, name...)
	return append(dst, value...)
}

func appendLen(dst []byte, n int) []byte {
	if n < 128 {
		return append(dst, byte(n))
	}
	return binary.BigEndian.AppendUint32(dst, uint32(n)|1<<31)
}

// pairError reports a malformed name-value pair stream.
type pairError struct {
	Offset int    // where the bad pair starts
	Reason string // what is wrong with it
}

func (e *pairError) Error() string {
	return fmt.Sprintf("fcgi: malformed name-value pair at byte %d: %s", e.Offset, e.Reason)
}

// ForEachPair calls fn for every pair encoded in b, in order, until fn
// returns false. The slices passed to fn alias b. A stream that ends inside a
// pair, or a length that overruns b, is a *pairError.
func ForEachPair(b []byte, fn func(name, value []byte) bool) error {
	off := 0
	for off < len(b) {
		start := off
		nlen, n, ok := readLen(b[off:])
		if !ok {
			return &pairError{Offset: start, Reason: "name length cut short"}
		}
		off += n
		vlen, n, ok := readLen(b[off:])
		if !ok {
			return &pairError{Offset: start, Reason: "value length cut short"}
		}
		off += n
		if nlen > len(b)-off || vlen > len(b)-off-nlen {
			return &pairError{Offset: start, Reason: fmt.Sprintf("name of %d and value of %d bytes overrun the %d bytes left", nlen, vlen, len(b)-off)}
		}
		name := b[off : off+nlen]
		off += nlen
		value := b[off : off+vlen]
		off += vlen
		if !fn(name, value) {
			return nil
		}
	}
	return nil
}

func readLen(b []byte) (length, n int, ok bool) {
	if len(b) == 0 {
		return 0, 0, false
	}
	if b[0]&0x80 == 0 {
		return int(b[0]), 1, true
	}
	if len(b) < 4 {
		return 0, 0, false
	}
	return int(binary.BigEndian.Uint32(b) & maxPairLen), 4, true
}

// ErrParamsTooLarge is wrapped by the error a ParamsBuffer returns when the
// PARAMS stream exceeds its limit.
var ErrParamsTooLarge = errors.New("PARAMS stream too large")

// ParamsBuffer gathers the content of the PARAMS records of one request, so
// that pairs split across record boundaries decode as one stream. Its zero
// value is ready to use and has no limit.
type ParamsBuffer struct {
	// Limit is the largest stream accepted, in bytes; 0 means no limit.
	Limit int

	buf []byte
}

// Append adds the content of one PARAMS record. It fails, keeping nothing of
// p, when the stream would exceed Limit.
func (p *ParamsBuffer) Append(content []byte) error {
	if p.Limit > 0 && len(p.buf)+len(content) > p.Limit {
		return fmt.Errorf("fcgi: %w: more than %d bytes", ErrParamsTooLarge, p.Limit)
	}
	p.buf = append(p.buf, content...)
	return nil
}

// Bytes returns the stream gathered so far. It aliases the buffer.
func (p *ParamsBuffer) Bytes() []byte { return p.buf }

// Len returns the length of the stream gathered so far.
func (p *ParamsBuffer) Len() int { return len(p.buf) }

// ForEach calls fn for every pair of the stream, as ForEachPair does.
func (p *ParamsBuffer) ForEach(fn func(name, value []byte) bool) error {
	return ForEachPair(p.buf, fn)
}

// Set replaces the stream with b, which must not alias the buffer, whatever
// Limit says: for a relay that rewrites a stream it accepted.
func (p *ParamsBuffer) Set(b []byte) { p.buf = append(p.buf[:0], b...) }

// Reset empties the buffer and keeps its memory for the next request.
func (p *ParamsBuffer) Reset() { p.buf = p.buf[:0] }
