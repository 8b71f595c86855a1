package proxy

import (
	"bytes"
	"context"
	"net"
	"testing"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/tracing"
)

// helloUpstream answers every request on a connection with a small page,
// keeping the connection as php-fpm does only when asked.
func helloUpstream(t testing.TB, conn net.Conn) {
	r := fcgi.NewReader(conn)
	w := fcgi.NewWriter(conn)
	page := []byte("Content-type: text/html; charset=UTF-8\r\n\r\nhello from php\n")
	for {
		var id uint16
		for {
			h, err := r.Next()
			if err != nil {
				return
			}
			id = h.RequestID
			if h.Type == fcgi.TypeStdin && h.ContentLength == 0 {
				break
			}
		}
		w.WriteRecord(fcgi.TypeStdout, id, page)
		w.EndStream(fcgi.TypeStdout, id)
		w.WriteEndRequest(id, fcgi.EndRequest{})
		if w.Flush() != nil {
			return
		}
	}
}

// nginxRequest is the bytes of a GET as nginx sends it: BEGIN_REQUEST with
// keep-conn, the usual params, an empty STDIN.
func nginxRequest() []byte {
	var params []byte
	for _, p := range [][2]string{
		{"QUERY_STRING", ""}, {"REQUEST_METHOD", "GET"}, {"CONTENT_TYPE", ""}, {"CONTENT_LENGTH", ""},
		{"SCRIPT_NAME", "/hello.php"}, {"REQUEST_URI", "/hello.php"}, {"DOCUMENT_URI", "/hello.php"},
		{"DOCUMENT_ROOT", "/srv/www"}, {"SERVER_PROTOCOL", "HTTP/1.1"}, {"REQUEST_SCHEME", "http"},
		{"GATEWAY_INTERFACE", "CGI/1.1"}, {"SERVER_SOFTWARE", "nginx/1.22.1"}, {"REMOTE_ADDR", "127.0.0.1"},
		{"REMOTE_PORT", "51234"}, {"SERVER_ADDR", "127.0.0.1"}, {"SERVER_PORT", "80"}, {"SERVER_NAME", "localhost"},
		{"REDIRECT_STATUS", "200"}, {"SCRIPT_FILENAME", "/srv/www/hello.php"}, {"HTTP_HOST", "localhost"},
		{"HTTP_USER_AGENT", "wrk"}, {"HTTP_ACCEPT", "*/*"}, {"REQUEST_ID", "0123456789abcdef0123456789abcdef"},
	} {
		params = fcgi.AppendPair(params, p[0], p[1])
	}
	var b bytes.Buffer
	w := fcgi.NewWriter(&b)
	w.WriteBeginRequest(1, fcgi.BeginRequest{Role: fcgi.RoleResponder, Flags: fcgi.FlagKeepConn})
	w.WriteStream(fcgi.TypeParams, 1, params)
	w.EndStream(fcgi.TypeParams, 1)
	w.EndStream(fcgi.TypeStdin, 1)
	w.Flush()
	return b.Bytes()
}

// BenchmarkRelayRequest measures one small request through the relay over
// unix sockets, on a kept-alive downstream connection, with a new upstream
// connection per request (as by default) and with a kept one
// (UpstreamKeepAlive). The upstream and the client share the process, so the
// absolute time includes theirs; with the kept upstream connection, whose
// fake upstream allocates nothing per request, allocs/op is the relay's.
//
// The traced case adds what tracing costs when it is on: a span per request
// started by the relay, the params rewritten, and the span ended by the
// tracing sink and queued for a collector that refuses connections (its
// spans are dropped), next to the same Explainer without tracing.
func BenchmarkRelayRequest(b *testing.B) {
	for _, bc := range []struct {
		name           string
		keep           int
		explain, trace bool
	}{{"new-upstream-conn", 0, false, false}, {"kept-upstream-conn", 1, false, false},
		{"kept-upstream-conn-explained", 1, true, false}, {"kept-upstream-conn-traced", 1, true, true}} {
		b.Run(bc.name, func(b *testing.B) {
			srv := &Server{Upstream: fakeUpstream(b, helloUpstream), HoldBytes: 65536, UpstreamKeepAlive: bc.keep}
			if bc.explain {
				e := &diagnostics.Explainer{}
				srv.Observer, srv.Responder = e, e
			}
			if bc.trace {
				b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
				tracer, err := tracing.New(context.Background(), tracing.Settings{On: true, Protocol: "http/protobuf"}, "bench", func(error) {})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { tracer.Shutdown(context.Background()) })
				srv.Tracer = tracer
				srv.Observer.(*diagnostics.Explainer).Sinks = []diagnostics.Sink{tracer}
			}
			addr := startProxyB(b, srv)
			conn, err := net.Dial(addr.Network, addr.Address)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			req := nginxRequest()
			r := fcgi.NewReader(conn)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := conn.Write(req); err != nil {
					b.Fatal(err)
				}
				for {
					h, err := r.Next()
					if err != nil {
						b.Fatal(err)
					}
					if h.Type == fcgi.TypeEndRequest {
						break
					}
				}
			}
		})
	}
}

func startProxyB(b *testing.B, srv *Server) fcgi.Addr {
	ln, err := net.Listen("unix", b.TempDir()+"/d.sock")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return fcgi.Addr{Network: "unix", Address: ln.Addr().String()}
}
