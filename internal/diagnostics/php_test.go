package diagnostics

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// A line from PHP's error log is only tied to a request it is about: its
// script, its document root, or, for a refused body, its very size.
func TestLogMessagesBelongToTheirRequestOnly(t *testing.T) {
	tr := &outcome.Trace{Script: "/srv/app/public/index.php", DocumentRoot: "/srv/app/public", ContentLength: 3000002}
	tests := []struct {
		text, file string
		want       bool
	}{
		{"PHP Request Startup: POST Content-Length of 3000002 bytes exceeds the limit of 2097152 bytes", "", true},
		{"PHP Request Startup: POST Content-Length of 9999999 bytes exceeds the limit of 2097152 bytes", "", false},
		{"Undefined variable $x", "/srv/app/public/index.php", true},
		{"Undefined variable $x", "/srv/app/public/lib/db.php", true},
		{"Undefined variable $x", "/srv/other/index.php", false},
		{"Input variables exceeded 1000", "", true},
	}
	for _, tt := range tests {
		if got := belongs(tr, fpm.Message{Text: tt.text, File: tt.file}); got != tt.want {
			t.Errorf("%q in %q: belongs %v, want %v", tt.text, tt.file, got, tt.want)
		}
	}
}

func TestAllowedClientsList(t *testing.T) {
	for _, tt := range []struct {
		list, ip string
		want     bool
	}{
		{"127.0.0.1", "127.0.0.1", true},
		{"10.0.0.5, 127.0.0.1", "127.0.0.1", true},
		{"127.0.0.2", "127.0.0.1", false},
		{"::1", "::ffff:127.0.0.1", false},
		{"127.0.0.1", "::ffff:127.0.0.1", true},
		{"127.0.0.2", "not an address", true},
	} {
		if got := allowed(tt.list, tt.ip); got != tt.want {
			t.Errorf("allowed(%q, %q) = %v, want %v", tt.list, tt.ip, got, tt.want)
		}
	}
}

// Without PHP's log, a body larger than post_max_size is still named, by
// the sizes, and says that it is judged so.
func TestBodyDiscardedBySizesWhenTheLogIsNotSeen(t *testing.T) {
	tr := workerDeath(10 * time.Millisecond)
	tr.Err, tr.Status, tr.Method, tr.ContentLength = nil, 200, "POST", 9<<20
	d := (&Classifier{}).Diagnose(tr)
	if d == nil || d.Cause != CauseBodyDiscarded || !strings.Contains(d.Detail, "post_max_size = 8M (PHP's default") || !strings.Contains(d.Detail, "judges by the sizes") {
		t.Fatalf("%+v", d)
	}
	// A PHP_VALUE nginx sends raises the limit for the request.
	tr.PHPValue = "post_max_size=16M\nupload_max_filesize=16M"
	if d := (&Classifier{}).Diagnose(tr); d != nil {
		t.Errorf("a 9 MiB body under PHP_VALUE post_max_size=16M: %s %s", d.Cause.ID, d.Detail)
	}
}

// The script_not_found detail says which part of the path is missing, in
// the file system it checked.
func TestScriptNotFoundNamesTheMissingPart(t *testing.T) {
	root := t.TempDir()
	completed := func(script, docRoot string) *outcome.Trace {
		tr := workerDeath(time.Millisecond)
		tr.Err, tr.Status, tr.Stderr = nil, 404, []byte("Primary script unknown")
		tr.Script, tr.DocumentRoot = script, docRoot
		return tr
	}
	d := (&Classifier{}).Diagnose(completed(filepath.Join(root, "gone/public/index.php"), filepath.Join(root, "gone/public")))
	if d.Cause != CauseScriptNotFound || !strings.Contains(d.Detail, "whole document root") || d.Evidence["deepest_existing"] != root {
		t.Errorf("missing root: %s %v", d.Detail, d.Evidence)
	}
	if !strings.Contains(d.Evidence["checked_in"], "as fcgiscope sees it") {
		t.Errorf("without php-fpm's view the detail must say whose file system it checked: %v", d.Evidence)
	}
	d = (&Classifier{}).Diagnose(completed(filepath.Join(root, "nope.php"), root))
	if !strings.Contains(d.Detail, "exists, but the file does not") {
		t.Errorf("missing file: %s", d.Detail)
	}
	os.WriteFile(filepath.Join(root, "there.php"), nil, 0o644)
	d = (&Classifier{FPMRoot: func() string { return "/proc/1/root" }}).Diagnose(completed(filepath.Join(root, "there.php"), root))
	if !strings.Contains(d.Evidence["checked_in"], "/proc/1/root") {
		t.Errorf("php-fpm's view not used: %v", d.Evidence)
	}
	d = (&Classifier{}).Diagnose(completed("", ""))
	if !strings.Contains(d.Hints[0], "SCRIPT_FILENAME") {
		t.Errorf("no SCRIPT_FILENAME: %q", d.Hints)
	}
}

// php-fpm's "server reached pm.max_children" warning goes with the
// requests that waited while it was logged.
func TestMaxChildrenWarningIsAttachedToRequestsThatWaited(t *testing.T) {
	log := fpmLog(t, "WARNING: [pool www] server reached pm.max_children setting (5), consider raising it")
	time.Sleep(50 * time.Millisecond)
	tr := workerDeath(time.Second)
	tr.QueueStart = time.Now().Add(-100 * time.Millisecond)
	tr.Err = &outcome.QueueTimeoutError{Waited: time.Second, MaxConns: 5}
	var d *Diagnosis
	for range 50 { // the follower reads the line a moment later
		if d = (&Classifier{Log: log}).Diagnose(tr); d.Evidence["fpm_max_children"] != "" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d.Cause != CauseQueueTimeout || !strings.Contains(d.Evidence["fpm_max_children"], "max_children setting (5)") || !strings.Contains(d.Detail, "every worker of the pool was busy") {
		t.Errorf("%s: %s %v", d.Cause.ID, d.Detail, d.Evidence)
	}
}

// Each signal gets its own advice.
func TestEverySignalHasItsOwnAdvice(t *testing.T) {
	seen := map[string]bool{}
	for _, name := range []string{"SIGSEGV", "SIGBUS", "SIGILL", "SIGABRT", "SIGFPE", "SIGKILL"} {
		var advice string
		for sig, a := range signalAdvice {
			if strings.HasPrefix(a, name+" ") {
				advice = adviseSignal(sig, name)
			}
		}
		if advice == "" || seen[advice] {
			t.Errorf("%s has no advice of its own", name)
		}
		seen[advice] = true
	}
}

// Without the pool's configuration, php-fpm's "Connection disallowed" line
// (catch_workers_output) is enough to name listen.allowed_clients.
func TestDisallowedConnectionIsNamedFromTheLog(t *testing.T) {
	tr := workerDeath(time.Millisecond)
	tr.Upstream = fcgi.Addr{Network: "tcp", Address: "127.0.0.1:9000"}
	tr.UpstreamLocal = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	log := fpmLog(t, `WARNING: [pool www] child 12 said into stderr: "ERROR: Connection disallowed: IP address '127.0.0.1' has been dropped."`)
	d := (&Classifier{Log: log, LogWait: time.Second}).Diagnose(tr)
	if d.Cause != CauseClientNotAllowed || d.Evidence["connected_from"] != "127.0.0.1" || !strings.Contains(d.Detail, "Connection disallowed") {
		t.Errorf("%s: %s %v", d.Cause.ID, d.Detail, d.Evidence)
	}
	// A unix socket has no allowed clients: a worker dying there is not it.
	tr = workerDeath(time.Millisecond)
	if d := (&Classifier{Log: fpmLog(t), LogWait: 50 * time.Millisecond}).Diagnose(tr); d.Cause == CauseClientNotAllowed {
		t.Errorf("a unix socket death blamed on listen.allowed_clients: %s", d.Detail)
	}
}
