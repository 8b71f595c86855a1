package outcome

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// Errors a Trace's Err is, or wraps, besides the typed ones below.
var (
	// ErrClientAborted means the web server (or the HTTP client) closed
	// its connection or sent ABORT_REQUEST before the response was
	// complete.
	ErrClientAborted = errors.New("the web server closed the connection before the response was complete")
	// ErrShutdown means fcgiscope was stopping and cut the request off.
	ErrShutdown = errors.New("fcgiscope was shutting down")
	// ErrNoEndRequest means the upstream closed the connection without
	// sending END_REQUEST, as a php-fpm worker does when it is killed. It
	// wraps the network error, so that errno checks still work.
	ErrNoEndRequest = errors.New("the upstream closed the connection before END_REQUEST")
)

// ReadTimeoutError means the upstream sent nothing for longer than the read
// timeout.
type ReadTimeoutError struct {
	Timeout time.Duration
}

func (e *ReadTimeoutError) Error() string {
	return fmt.Sprintf("the upstream sent nothing within the read timeout (%s)", e.Timeout)
}

// ParamsTimeoutError means the web server did not send the whole request
// head within the params timeout.
type ParamsTimeoutError struct {
	Timeout time.Duration
}

func (e *ParamsTimeoutError) Error() string {
	return fmt.Sprintf("the web server did not send the whole request head within the params timeout (%s)", e.Timeout)
}

// QueueTimeoutError means no upstream slot became free within the queue
// timeout. WebServerGaveUp says that the wait lasted as long as the web
// server waits for a response: it gave up on the request first.
type QueueTimeoutError struct {
	Waited          time.Duration
	MaxConns        int
	WebServerGaveUp bool
}

func (e *QueueTimeoutError) Error() string {
	if e.WebServerGaveUp {
		return fmt.Sprintf("no upstream slot became free in %s (all %d in use), as long as the web server waits", e.Waited.Round(time.Millisecond), e.MaxConns)
	}
	return fmt.Sprintf("no upstream slot became free in %s (all %d in use)", e.Waited.Round(time.Millisecond), e.MaxConns)
}

// DialError is a failure to connect to the upstream. Err is the dialer's
// error, whose errno says why.
type DialError struct {
	Addr fcgi.Addr
	Err  error
}

func (e *DialError) Error() string { return "connecting to " + e.Addr.String() + ": " + e.Err.Error() }

func (e *DialError) Unwrap() error { return e.Err }

// ProtocolError is a violation of FastCGI by a peer.
type ProtocolError struct {
	// Upstream is true when the upstream broke the protocol, false when
	// the web server did.
	Upstream bool
	Reason   string
}

func (e *ProtocolError) Error() string {
	if e.Upstream {
		return "upstream broke FastCGI: " + e.Reason
	}
	return "web server broke FastCGI: " + e.Reason
}

// RejectedError is an END_REQUEST whose protocol status refuses the request
// (OVERLOADED, CANT_MPX_CONN, UNKNOWN_ROLE).
type RejectedError struct {
	Status fcgi.ProtocolStatus
}

func (e *RejectedError) Error() string {
	return "the upstream refused the request with END_REQUEST " + e.Status.String()
}

// UnexpectedRecordError is the ProtocolError of a record from the upstream
// that has no place in the response to request sent.
func UnexpectedRecordError(h fcgi.Header, sent uint16) error {
	if h.RequestID != sent {
		return &ProtocolError{Upstream: true, Reason: fmt.Sprintf("%s record for request %d, but request %d was sent", h.Type, h.RequestID, sent)}
	}
	return &ProtocolError{Upstream: true, Reason: fmt.Sprintf("unexpected %s record from the upstream", h.Type)}
}

// UpstreamReadError names the error of a failed read from the upstream: a
// stream that is not FastCGI stays what it is, a deadline that passed is a
// ReadTimeoutError when readTimeout is set, anything else is a connection
// that ended before END_REQUEST.
func UpstreamReadError(err error, readTimeout time.Duration) error {
	var ve *fcgi.VersionError
	switch {
	case errors.As(err, &ve):
		return err
	case readTimeout > 0 && errors.Is(err, os.ErrDeadlineExceeded):
		return &ReadTimeoutError{Timeout: readTimeout}
	}
	return fmt.Errorf("%w: %w", ErrNoEndRequest, err)
}

// EndError says what an END_REQUEST means for the request: nil when it ends
// a response, a RejectedError when the upstream refused the request, and a
// ProtocolError when it ended the request without a complete CGI head, to
// which nginx would answer a blank 502 ("upstream prematurely closed
// FastCGI stdout"). headEnded reports whether the blank line after the CGI
// headers was seen; stdout counts the STDOUT bytes received.
//
// Callers that already sent part of the response on let it stand: there is
// nothing left to answer for.
func EndError(end fcgi.EndRequest, headEnded bool, stdout int64) error {
	switch {
	case end.ProtocolStatus != fcgi.StatusRequestComplete:
		return &RejectedError{Status: end.ProtocolStatus}
	case headEnded:
		return nil
	case stdout == 0:
		return &ProtocolError{Upstream: true, Reason: "END_REQUEST came without any STDOUT"}
	}
	return &ProtocolError{Upstream: true, Reason: fmt.Sprintf("the response ended after %d STDOUT bytes without the blank line that ends the CGI headers", stdout)}
}

// InvalidHeaderError means the upstream's CGI head holds a line nginx
// refuses ("upstream sent invalid header"): Line is the line, Why what is
// wrong with it.
type InvalidHeaderError struct {
	Line, Why string
}

func (e *InvalidHeaderError) Error() string {
	return fmt.Sprintf("upstream sent a CGI header line nginx refuses (%s): %q", e.Why, e.Line)
}

// HeadTooBigError means the response's head does not fit the buffer the
// web server reads it into (nginx's fastcgi_buffer_size): Bytes is what it
// takes in FastCGI records, framing included, or what it took when the
// relay stopped reading it (Whole is false), and Limit the buffer's size.
//
// Err is set when the head was passed on, the buffer's size being only
// assumed, and the web server then dropped the connection: it says how,
// and errors.Is(err, ErrClientAborted) holds.
type HeadTooBigError struct {
	Bytes, Limit int
	Whole        bool
	Err          error
}

func (e *HeadTooBigError) Error() string {
	more := ""
	if !e.Whole {
		more = " at least"
	}
	msg := fmt.Sprintf("the response head takes%s %d bytes, more than the web server's buffer of %d", more, e.Bytes, e.Limit)
	if e.Err != nil {
		msg += ", and the web server dropped the connection after it: " + e.Err.Error()
	}
	return msg
}

func (e *HeadTooBigError) Unwrap() error { return e.Err }

// HeadTooLongError means the upstream's CGI headers did not end within
// Limit bytes: an upstream that is not sending a CGI response, or one whose
// headers nothing downstream would accept.
type HeadTooLongError struct {
	Limit int
}

func (e *HeadTooLongError) Error() string {
	return fmt.Sprintf("upstream broke FastCGI: the CGI headers did not end within %d bytes", e.Limit)
}
