package fcgi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// ErrNoEndRequest is wrapped by the error a round trip returns when the
// application closed the connection without sending END_REQUEST, as a
// php-fpm worker does when it is killed.
var ErrNoEndRequest = errors.New("connection closed before END_REQUEST")

// Request is one request a Client sends.
type Request struct {
	// ID is the request id; 0 means 1.
	ID uint16
	// Role is the role; 0 means RoleResponder.
	Role Role
	// KeepConn asks the application to keep the connection open.
	KeepConn bool
	// Params are sent in order in the PARAMS stream.
	Params []Pair
	// Stdin is the request body; nil means none.
	Stdin io.Reader
}

// Response is what a Client received for one request.
type Response struct {
	Stdout []byte
	Stderr []byte
	End    EndRequest

	// Connect is the time to establish the connection, FirstByte the time
	// from the start until the first STDOUT or STDERR byte, Total the time
	// until END_REQUEST.
	Connect, FirstByte, Total time.Duration
}

// Client sends single requests to a FastCGI application, each over a new
// connection. Its zero value is not usable: Addr must be set.
type Client struct {
	Addr Addr
	// DialTimeout bounds the connection attempt; 0 means 3 seconds.
	DialTimeout time.Duration
}

func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	timeout := c.DialTimeout
	if timeout == 0 {
		timeout = 3 * time.Second
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, c.Addr.Network, c.Addr.Address)
	if err != nil {
		return nil, fmt.Errorf("fcgi: connecting to %s: %w", c.Addr, err)
	}
	return conn, nil
}

// Do connects, sends req and collects the whole response. The context bounds
// the whole exchange. On failure the partial response is returned with the
// error.
func (c *Client) Do(ctx context.Context, req *Request) (*Response, error) {
	start := time.Now()
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	resp := &Response{Connect: time.Since(start)}
	stop := watchContext(ctx, conn)
	defer stop()
	var stdout, stderr bytes.Buffer
	first := &firstByteWriter{start: start}
	resp.End, err = RoundTrip(conn, req, io.MultiWriter(first, &stdout), io.MultiWriter(first, &stderr))
	resp.Stdout, resp.Stderr = stdout.Bytes(), stderr.Bytes()
	resp.FirstByte = first.elapsed
	resp.Total = time.Since(start)
	return resp, withContextErr(ctx, err)
}

// GetValues asks the application for the named variables (FCGI_MAX_CONNS and
// the like) and returns its answer.
func (c *Client) GetValues(ctx context.Context, names ...string) (map[string]string, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := watchContext(ctx, conn)
	defer stop()
	values, err := getValues(conn, names)
	return values, withContextErr(ctx, err)
}

func getValues(conn net.Conn, names []string) (map[string]string, error) {
	var body []byte
	for _, n := range names {
		body = AppendPair(body, n, "")
	}
	w := NewWriter(conn)
	if err := w.WriteRecord(TypeGetValues, 0, body); err != nil {
		return nil, err
	}
	if err := w.Flush(); err != nil {
		return nil, fmt.Errorf("fcgi: sending GET_VALUES: %w", err)
	}
	r := NewReader(conn)
	for {
		h, err := r.Next()
		if err != nil {
			if err == io.EOF {
				return nil, fmt.Errorf("fcgi: waiting for GET_VALUES_RESULT: %w", io.ErrUnexpectedEOF)
			}
			return nil, err
		}
		if h.Type != TypeGetValuesResult {
			continue
		}
		values := make(map[string]string)
		err = ForEachPair(r.Content(), func(name, value []byte) bool {
			values[string(name)] = string(value)
			return true
		})
		return values, err
	}
}

// watchContext closes conn when ctx ends; the returned function stops the
// watch. Closing, rather than a deadline, leaves one timer to decide, so the
// error always says that the context ended.
func watchContext(ctx context.Context, conn net.Conn) func() bool {
	return context.AfterFunc(ctx, func() { conn.Close() })
}

// withContextErr adds ctx's error to err when ctx has ended, since the
// network error alone ("use of closed network connection") hides why.
func withContextErr(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		return fmt.Errorf("%w (%w)", err, ctx.Err())
	}
	return err
}

type firstByteWriter struct {
	start   time.Time
	elapsed time.Duration
}

func (f *firstByteWriter) Write(p []byte) (int, error) {
	if f.elapsed == 0 && len(p) > 0 {
		f.elapsed = time.Since(f.start)
	}
	return len(p), nil
}

// RoundTrip sends req over conn and copies the response's STDOUT and STDERR
// streams to stdout and stderr until END_REQUEST arrives. The request body is
// sent while the response is read, so an application that answers before
// reading the whole body does not deadlock the exchange. A connection that
// ends before END_REQUEST gives an error wrapping ErrNoEndRequest. The
// goroutine that sends the body ends when the body is sent or when a write to
// conn fails, so callers close conn after an error; a Stdin whose Read blocks
// keeps it until Read returns.
func RoundTrip(conn io.ReadWriter, req *Request, stdout, stderr io.Writer) (EndRequest, error) {
	id := req.ID
	if id == 0 {
		id = 1
	}
	role := req.Role
	if role == 0 {
		role = RoleResponder
	}
	var flags uint8
	if req.KeepConn {
		flags = FlagKeepConn
	}
	w := NewWriter(conn)
	w.WriteBeginRequest(id, BeginRequest{Role: role, Flags: flags})
	var params []byte
	for _, p := range req.Params {
		params = AppendPair(params, p.Name, p.Value)
	}
	w.WriteStream(TypeParams, id, params)
	w.EndStream(TypeParams, id)
	// Send the head now: the body may be slow to come, and the
	// application can start (or refuse) on the head alone.
	if err := w.Flush(); err != nil {
		return EndRequest{}, fmt.Errorf("fcgi: sending the request head: %w", err)
	}

	sent := make(chan error, 1)
	go func() {
		sent <- sendStdin(w, id, req.Stdin)
	}()

	end, err := readResponse(NewReader(conn), id, stdout, stderr)
	if err != nil {
		return end, err
	}
	// The application may answer before reading the whole body; php-fpm
	// does for a missing script. The response is complete either way.
	select {
	case <-sent:
	default:
	}
	return end, nil
}

func sendStdin(w *Writer, id uint16, body io.Reader) error {
	if body != nil {
		buf := make([]byte, MaxWriteContent)
		for {
			n, err := body.Read(buf)
			if n > 0 {
				if werr := w.WriteRecord(TypeStdin, id, buf[:n]); werr != nil {
					return werr
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("fcgi: reading request body: %w", err)
			}
		}
	}
	if err := w.EndStream(TypeStdin, id); err != nil {
		return err
	}
	return w.Flush()
}

func readResponse(r *Reader, id uint16, stdout, stderr io.Writer) (EndRequest, error) {
	for {
		h, err := r.Next()
		if err != nil {
			var ve *VersionError
			if errors.As(err, &ve) {
				return EndRequest{}, err
			}
			// A reset and a plain close both mean the application went
			// away mid-request; keep the cause for errno checks.
			return EndRequest{}, fmt.Errorf("fcgi: %w: %w", ErrNoEndRequest, err)
		}
		if h.RequestID != id {
			continue
		}
		switch h.Type {
		case TypeStdout:
			if _, err := stdout.Write(r.Content()); err != nil {
				return EndRequest{}, err
			}
		case TypeStderr:
			if _, err := stderr.Write(r.Content()); err != nil {
				return EndRequest{}, err
			}
		case TypeEndRequest:
			return ParseEndRequest(r.Content())
		}
	}
}
