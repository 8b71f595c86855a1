package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// runRequest runs `fcgiscope request` with args and returns its exit code,
// stdout and stderr.
func runRequest(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := requestMain(ctx, args, &stdout, &stderr)
	t.Logf("fcgiscope request %s -> exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return code, stdout.String(), stderr.String()
}

func TestRequestAgainstPHPFPM(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	root := testbed.PHPRoot(t)

	t.Run("GET hello", func(t *testing.T) {
		code, out, errOut := runRequest(t, "--upstream", fpm.Addr, "--root", root, "/hello.php")
		if code != exitOK {
			t.Fatalf("exit %d, want 0", code)
		}
		if !strings.HasSuffix(out, "\r\n\r\nhello from php\n") {
			t.Errorf("stdout is not the CGI headers followed by the body: %q", out)
		}
		if !strings.Contains(errOut, "HTTP 200 · connect ") || !strings.Contains(errOut, " · app status 0") {
			t.Errorf("no timing line with status and app status on stderr: %q", errOut)
		}
		if strings.Contains(errOut, "fcgiscope: ") {
			t.Errorf("a clean response got a diagnosis: %q", errOut)
		}
	})

	t.Run("POST body", func(t *testing.T) {
		body := "a=1&b=" + strings.Repeat("x", 100000)
		code, out, _ := runRequest(t, "--upstream", fpm.Addr, "--root", root, "-d", body, "/echo.php")
		if code != exitOK {
			t.Fatalf("exit %d", code)
		}
		sum := sha256.Sum256([]byte(body))
		want := fmt.Sprintf("len=%d sha256=%s\n", len(body), hex.EncodeToString(sum[:]))
		if !strings.HasSuffix(out, want) {
			t.Errorf("body = %q, want it to end in %q", tailOf(out), want)
		}
	})

	t.Run("POST @file with headers and params", func(t *testing.T) {
		content := bytes.Repeat([]byte("0123456789abcdef"), 70000) // more than one record
		file := filepath.Join(t.TempDir(), "body.bin")
		if err := os.WriteFile(file, content, 0o644); err != nil {
			t.Fatal(err)
		}
		code, out, _ := runRequest(t, "--upstream", fpm.Addr, "--root", root, "-d", "@"+file, "/echo.php")
		if code != exitOK {
			t.Fatalf("exit %d", code)
		}
		sum := sha256.Sum256(content)
		want := fmt.Sprintf("len=%d sha256=%s\n", len(content), hex.EncodeToString(sum[:]))
		if !strings.HasSuffix(out, want) {
			t.Errorf("body = %q, want it to end in %q", tailOf(out), want)
		}

		// Flags after the URL, headers as HTTP_*, Proxy dropped, --param wins.
		code, out, errOut := runRequest(t, "/env.php?q=1", "--upstream", fpm.Addr, "--root", root,
			"-X", "put", "-H", "X-Trace: abc", "-H", "Proxy: http://evil", "--param", "REQUEST_URI=/overridden")
		if code != exitOK {
			t.Fatalf("exit %d", code)
		}
		for _, want := range []string{"HTTP_X_TRACE=abc\n", "REQUEST_METHOD=PUT\n", "QUERY_STRING=q=1\n", "REQUEST_URI=/overridden\n", "SCRIPT_FILENAME=" + root + "/env.php\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("env.php output lacks %q", want)
			}
		}
		if strings.Contains(out, "HTTP_PROXY") {
			t.Error("the Proxy header reached PHP as HTTP_PROXY (httpoxy)")
		}
		if !strings.Contains(errOut, "httpoxy") {
			t.Error("dropping the Proxy header was not said")
		}
	})

	t.Run("missing script", func(t *testing.T) {
		code, out, errOut := runRequest(t, "--upstream", fpm.Addr, "--root", root, "/nope.php")
		if code != exitOK {
			t.Fatalf("exit %d, want 0: php-fpm completed the response", code)
		}
		if !strings.Contains(out, "Status: 404 Not Found") || !strings.HasSuffix(out, "File not found.\n") {
			t.Errorf("stdout = %q, want php-fpm's 404 \"File not found.\"", out)
		}
		for _, want := range []string{"HTTP 404", "php-fpm stderr: Primary script unknown", "fcgiscope: script_not_found (404): ", root + "/nope.php"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("stderr lacks %q", want)
			}
		}
	})

	t.Run("missing script without --root", func(t *testing.T) {
		// The script is looked for in the current directory: the advice
		// is about --root, not about an nginx that is not involved.
		cwd, _ := os.Getwd()
		code, _, errOut := runRequest(t, "--upstream", fpm.Addr, "/hello.php")
		if code != exitOK || !strings.Contains(errOut, "fcgiscope: script_not_found (404): ") {
			t.Fatalf("exit %d, want 0 and script_not_found", code)
		}
		want := "hint: SCRIPT_FILENAME " + cwd + "/hello.php was built from the current directory, since no --root was given: give the document root as php-fpm sees it"
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q", want)
		}
		if strings.Contains(errOut, "fastcgi_param") || strings.Contains(errOut, "try_files") {
			t.Errorf("the advice is about nginx, which is not involved")
		}
	})

	t.Run("worker dies mid-request", func(t *testing.T) {
		code, _, errOut := runRequest(t, "--upstream", fpm.Addr, "--root", root, "/crash.php?sig=9")
		if code != exitFailure {
			t.Fatalf("exit %d, want 1", code)
		}
		if !strings.Contains(errOut, "fcgiscope: worker_died (502): ") || !strings.Contains(errOut, "without sending END_REQUEST") {
			t.Errorf("stderr does not name worker_died")
		}
	})

	t.Run("worker crash named from php-fpm's log", func(t *testing.T) {
		t.Setenv("FCGISCOPE_FPM_CONFIG", fpm.ConfigPath)
		code, _, errOut := runRequest(t, "--upstream", fpm.Addr, "--root", root, "/crash.php?sig=11")
		if code != exitFailure {
			t.Fatalf("exit %d, want 1", code)
		}
		if !strings.Contains(errOut, "fcgiscope: worker_crashed (502): ") || !strings.Contains(errOut, "SIGSEGV") {
			t.Errorf("stderr does not name the crash and its signal:\n%s", errOut)
		}
	})

	t.Run("dead address", func(t *testing.T) {
		dead := "127.0.0.1:" + strconv.Itoa(testbed.FreePort(t))
		code, out, errOut := runRequest(t, "--upstream", dead, "--root", root, "/hello.php")
		if code != exitFailure {
			t.Fatalf("exit %d, want 1", code)
		}
		if out != "" {
			t.Errorf("stdout = %q, want nothing", out)
		}
		if !strings.Contains(errOut, "fcgiscope: upstream_refused (502): Nothing is listening at the php-fpm address") {
			t.Errorf("stderr does not name upstream_refused")
		}
		if !strings.Contains(errOut, "hint: A FastCGI server answers on "+fpm.Addr) {
			t.Errorf("no hint names the php-fpm socket that answers, %s", fpm.Addr)
		}
	})

	t.Run("missing socket", func(t *testing.T) {
		gone := "unix:" + filepath.Join(fpm.Dir, "gone.sock")
		code, _, errOut := runRequest(t, "--upstream", gone, "--root", root, "/hello.php")
		if code != exitFailure || !strings.Contains(errOut, "fcgiscope: upstream_socket_missing (502): ") {
			t.Errorf("exit %d, want 1 and upstream_socket_missing", code)
		}
		if !strings.Contains(errOut, "A socket exists at "+fpm.Addr) {
			t.Errorf("the hint does not name the socket next to the missing one")
		}
	})
}

func TestRequestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad upstream", []string{"--upstream", "/run/php.sock", "/x.php"}, "accepted forms are"},
		{"port only", []string{"--upstream", "9000", "/x.php"}, "127.0.0.1:9000"},
		{"no URL", []string{"--upstream", "127.0.0.1:9000"}, "want exactly one script URL"},
		{"relative URL", []string{"x.php"}, "must start with /"},
		{"bad header", []string{"-H", "NoColon", "/x.php"}, "'Name: value'"},
		{"bad param", []string{"--param", "NOVALUE", "/x.php"}, "NAME=value"},
		{"missing body file", []string{"-d", "@/nonexistent/body", "/x.php"}, "/nonexistent/body"},
		{"unknown flag", []string{"--bogus", "/x.php"}, "bogus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runRequest(t, tt.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want 2", code)
			}
			if out != "" {
				t.Errorf("stdout = %q", out)
			}
			if !strings.Contains(errOut, tt.want) {
				t.Errorf("stderr does not say %q", tt.want)
			}
		})
	}
}

// TestRequestNotFastCGI points the command at an HTTP server: php-fpm
// cannot be made to answer in HTTP, so a plain listener stands in for the
// misconfigured port.
func TestRequestNotFastCGI(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
			c.Close()
		}
	}()
	code, _, errOut := runRequest(t, "--upstream", ln.Addr().String(), "/x.php")
	if code != exitFailure || !strings.Contains(errOut, "fcgiscope: upstream_not_fastcgi (502): ") || !strings.Contains(errOut, "An HTTP server listens there") {
		t.Errorf("exit %d; want 1 and upstream_not_fastcgi naming an HTTP server", code)
	}
}

// TestRequestTimeout holds the request in a silent listener past --timeout.
func TestRequestTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}()
	code, _, errOut := runRequest(t, "--upstream", ln.Addr().String(), "--timeout", "200ms", "/x.php")
	if code != exitFailure || !strings.Contains(errOut, "fcgiscope: upstream_read_timeout (504): ") {
		t.Errorf("exit %d; want 1 and upstream_read_timeout", code)
	}
}

func tailOf(s string) string {
	if len(s) > 200 {
		return "..." + s[len(s)-200:]
	}
	return s
}
