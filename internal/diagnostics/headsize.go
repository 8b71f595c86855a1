package diagnostics

import (
	"fmt"
	"strconv"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/front"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// headTooBig explains a response whose head does not fit nginx's
// fastcgi_buffer_size.
func (c *Classifier) headTooBig(t *outcome.Trace, e *outcome.HeadTooBigError, d *Diagnosis) {
	bs := c.front().BufferSize()
	d.Cause = CauseHeadTooBig
	d.Evidence["head_bytes"] = strconv.Itoa(e.Bytes)
	d.Evidence["fastcgi_buffer_size"] = bs.String()
	size := fmt.Sprintf("%d bytes", e.Bytes)
	if !e.Whole {
		size = "at least " + size
	}
	d.Detail = fmt.Sprintf("%s sent response headers that take %s as nginx buffers them, more than a %s fastcgi_buffer_size holds (fastcgi_buffer_size = %s); nginx refuses such a response with a bare 502 (\"upstream sent too big header\").", scriptName(t), size, front.Bytes(e.Limit), bs)
	if e.Err != nil {
		d.Detail += " fcgiscope passed the response on, since nginx's setting is not known to it for sure, and nginx dropped the connection right after the headers."
	}
	fit := fittingBuffer(e.Bytes)
	d.Hints = []string{
		fmt.Sprintf("In the location that passes PHP to fcgiscope, next to fastcgi_pass, set\n    fastcgi_buffer_size %s;\n    fastcgi_buffers 8 %s;\nthen nginx -t && nginx -s reload.", fit, fit),
		"Or send smaller headers: large cookies, JWTs and debug headers (X-Debug-*, Link) are the usual culprits.",
	}
}

// fittingBuffer returns a buffer size that holds n bytes with a quarter to
// spare, since headers vary from one request to the next (cookies grow), in
// steps nginx users write: 8k, 16k, 32k and so on.
func fittingBuffer(n int) front.Bytes {
	size := front.Bytes(8 << 10)
	for size < front.Bytes(n+n/4) {
		size *= 2
	}
	return size
}
