package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// replay runs `fcgiscope request --replay id` as a user would, against the
// admin endpoint at admin, and returns its exit code, stdout and stderr.
func replay(t *testing.T, admin, id string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testbed.BuildFcgiscope(t), append([]string{"request", "--replay", id, "--admin", admin}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := cmd.ProcessState.ExitCode()
	if err != nil && code < 0 {
		t.Fatalf("fcgiscope request --replay: %v", err)
	}
	t.Logf("fcgiscope request --replay %s -> exit %d\nstdout:\n%s\nstderr:\n%s", id, code, stdout.String(), stderr.String())
	return code, stdout.String(), stderr.String()
}

// The workflow of a PHP developer: a request fails through the sidecar,
// the setting is changed, and the same request, named by the id on its
// error page, is sent again and now succeeds.
func TestReplayAfterTheFix(t *testing.T) {
	testbed.RequireFPM(t)
	sock := filepath.Join(testbed.ShortTempDir(t), "php-fpm.sock")
	fpm := testbed.StartFPM(t, testbed.FPMConfig{Listen: sock, RequestTerminateTimeout: time.Second})
	admin := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	s := startFailStack(t, "tcp", fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath, "FCGISCOPE_ADMIN_LISTEN="+admin)

	e := s.getProblem(t, "/sleep.php?s=2", "worker_timeout_killed", 502)

	// The fix: php-fpm restarted with a longer request_terminate_timeout.
	fpm.Stop()
	testbed.StartFPM(t, testbed.FPMConfig{Listen: sock, RequestTerminateTimeout: 10 * time.Second})

	code, out, errOut := replay(t, admin, e.problem.RequestID)
	if code != 0 {
		t.Fatalf("the replay exits %d, want 0", code)
	}
	if !strings.HasSuffix(out, "slept\n") {
		t.Errorf("stdout does not carry the script's response:\n%s", out)
	}
	want := "fcgiscope: request " + e.problem.RequestID + ": first worker_timeout_killed (HTTP 502) after "
	if !strings.Contains(errOut, want) || !strings.Contains(errOut, "; replayed ok (HTTP 200) after ") {
		t.Errorf("stderr does not set the replay's outcome beside the first one (%q ... replayed ok):\n%s", want, errOut)
	}
	if !strings.Contains(errOut, "to unix:"+sock) {
		t.Errorf("the replay does not say it went to the recorded upstream unix:%s:\n%s", sock, errOut)
	}
}

// A replayed request never carries what the sidecar redacted: the
// client's cookies, its Authorization, secret-looking headers, query
// values and form fields.
func TestReplayCarriesNoSecret(t *testing.T) {
	testbed.RequireFPM(t)
	sock := filepath.Join(testbed.ShortTempDir(t), "php-fpm.sock")
	admin := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	// php-fpm is not there yet: the request fails and is kept.
	s := startFailStack(t, "tcp", "unix:"+sock, "FCGISCOPE_ADMIN_LISTEN="+admin, "FCGISCOPE_REPLAY_BODY_BYTES=4096")

	secrets := []string{"tok-7f3a", "cookie-91bc", "auth-55de", "key-0c0c", "pw-e1e1"}
	req, _ := http.NewRequest("POST", s.nginx.URL+"/env.php?user=ann&token=tok-7f3a", strings.NewReader("user=ann&password=pw-e1e1"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Cookie", "sid=cookie-91bc")
	req.Header.Set("Authorization", "Bearer auth-55de")
	req.Header.Set("X-Api-Key", "key-0c0c")
	req.Header.Set("X-Trace", "plain-value")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Header.Get("X-Fcgiscope-Request-Id")
	if resp.StatusCode != 502 || id == "" {
		t.Fatalf("status %d, request id %q; want 502 with an id", resp.StatusCode, id)
	}
	s.waitLogLine(t, id)

	testbed.StartFPM(t, testbed.FPMConfig{Listen: sock})
	code, out, errOut := replay(t, admin, id)
	if code != 0 {
		t.Fatalf("the replay exits %d, want 0", code)
	}
	for _, secret := range secrets {
		if strings.Contains(out, secret) || strings.Contains(errOut, secret) {
			t.Errorf("the replay carries the secret %q", secret)
		}
	}
	for _, line := range []string{
		"QUERY_STRING=user=ann&token=REDACTED",
		"REQUEST_URI=/env.php?user=ann&token=REDACTED",
		"REQUEST_METHOD=POST",
		"HTTP_X_TRACE=plain-value",
		fmt.Sprintf("CONTENT_LENGTH=%d", len("user=ann&password=REDACTED")),
		fmt.Sprintf("HTTP_CONTENT_LENGTH=%d", len("user=ann&password=REDACTED")),
	} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("the replayed request lacks %s", line)
		}
	}
	for _, name := range []string{"HTTP_COOKIE", "HTTP_AUTHORIZATION", "HTTP_X_API_KEY"} {
		if strings.Contains(out, name+"=") {
			t.Errorf("the replayed request carries %s", name)
		}
		if !strings.Contains(errOut, name) {
			t.Errorf("stderr does not say %s was left out", name)
		}
	}
}
