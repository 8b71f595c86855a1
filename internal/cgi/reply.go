package cgi

import (
	"fmt"
	"time"
)

// Reply is a response sent in place of the upstream's when a request
// failed before any of the response reached the client.
type Reply struct {
	// CGI is the response in CGI form: headers including Status, a blank
	// line, the body.
	CGI []byte
	// LogLine, when not empty, is the line for the web server's error
	// log; the relay sends it as FCGI_STDERR.
	LogLine string
}

// PlainReply is the reply of a relay or gateway that has nobody to explain
// the failure: a 502 that names the error.
func PlainReply(err error, requestID string) Reply {
	msg := "fcgiscope: the request failed: " + err.Error()
	return Reply{
		CGI:     []byte("Status: 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n\r\n" + msg + "\n"),
		LogLine: msg + " (request_id=" + requestID + ")",
	}
}

// ServerTiming is the value of the Server-Timing header that the relay and
// the gateway add on request: the time spent connecting to php-fpm and
// waiting for its first byte, for the browser's developer tools.
func ServerTiming(connect, wait time.Duration) string {
	return fmt.Sprintf("fcgi-connect;dur=%.3f;desc=\"connect to php-fpm\", fcgi-wait;dur=%.3f;desc=\"wait for php-fpm\"",
		float64(connect.Microseconds())/1000, float64(wait.Microseconds())/1000)
}
