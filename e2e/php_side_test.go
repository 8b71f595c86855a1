package e2e

import (
	"bytes"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// phpStack is nginx -> fcgiscope -> php-fpm, with PHP's errors going into
// each request's FastCGI stderr (PHP's default under php-fpm), into a file
// named by the pool's php_admin_value[error_log] (a common production
// setup), or into the workers' standard error, which php-fpm copies into
// its own log with catch_workers_output (the official Docker images).
type phpStack struct {
	*failStack
	fpm    *testbed.FPM
	phpLog string // "" when errors go to FastCGI stderr
}

// errorSinks are the places PHP's errors go that every PHP-side cause must
// be found in.
var errorSinks = []string{"stderr", "error_log", "workers_output"}

func startPHPStack(t *testing.T, sink string, cfg testbed.FPMConfig, ngx testbed.NginxConfig) *phpStack {
	t.Helper()
	testbed.RequireFPM(t)
	testbed.RequireNginx(t)
	s := &phpStack{}
	if sink == "error_log" {
		dir := testbed.ShortTempDir(t)
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		s.phpLog = filepath.Join(dir, "php-errors.log")
		cfg.Extra += "php_admin_value[error_log] = " + s.phpLog + "\nphp_admin_flag[log_errors] = on\n"
	}
	if sink == "workers_output" {
		cfg.CatchWorkersOutput = true
		cfg.Extra += "php_admin_value[error_log] = /proc/self/fd/2\nphp_admin_flag[log_errors] = on\n"
	}
	s.fpm = testbed.StartFPM(t, cfg)
	listen := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	s.failStack = &failStack{listen: listen}
	// nginx first, so that fcgiscope reads its configuration.
	ngx.FastCGIPass = listen
	s.nginx = testbed.StartNginx(t, ngx)
	s.fcgiscope = testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN="+listen, "FCGISCOPE_UPSTREAM="+s.fpm.Addr,
		"FCGISCOPE_FPM_CONFIG="+s.fpm.ConfigPath, "FCGISCOPE_NGINX_CONFIG="+s.nginx.ConfigPath)
	return s
}

// messageSource is where fcgiscope reads PHP's messages with sink.
func (s *phpStack) messageSource(sink string) string {
	switch sink {
	case "error_log":
		return s.phpLog
	case "workers_output":
		return s.fpm.ErrorLog
	}
	return "FastCGI stderr"
}

// do sends req through nginx and returns the response status and
// fcgiscope's log line for it, found by its unique URI.
func (s *phpStack) do(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	uri := req.URL.RequestURI()
	line := waitLog(t, s.fcgiscope, func(m map[string]any) bool { return m["message"] == "request" && m["uri"] == uri })
	return resp.StatusCode, line
}

// uniq makes each request's URI its own, to find its log line.
var uniq = func() func() string {
	n := 0
	return func() string { n++; return fmt.Sprintf("n=%d-%d", time.Now().UnixNano(), n) }
}()

// wantLogged checks that a response php-fpm completed passed through with
// its own status and that the log line names the cause, at warn.
func wantLogged(t *testing.T, status int, line map[string]any, cause string, wantStatus int) map[string]any {
	t.Helper()
	if status != wantStatus {
		t.Errorf("client got %d, want php-fpm's own %d: a completed response must pass unchanged", status, wantStatus)
	}
	if line["outcome"] != cause || line["cause"] != cause || line["level"] != "warn" || line["replaced"] != false {
		t.Fatalf("log line: outcome %v cause %v level %v replaced %v, want %s at warn, not replaced: %v", line["outcome"], line["cause"], line["level"], line["replaced"], cause, line)
	}
	ev, _ := line["evidence"].(map[string]any)
	return ev
}

func hintsOf(line map[string]any) []string {
	var hints []string
	list, _ := line["hints"].([]any)
	for _, h := range list {
		s, _ := h.(string)
		hints = append(hints, s)
	}
	return hints
}

// A form larger than post_max_size: PHP drops the body, the script answers
// 200 with an empty $_POST, and only PHP's log tells. fcgiscope names the
// setting with its file and line, the size, and nginx's
// client_max_body_size to change with it.
func TestPostLargerThanPostMaxSizeIsNamed(t *testing.T) {
	for _, sink := range errorSinks {
		t.Run(sink, func(t *testing.T) {
			s := startPHPStack(t, sink, testbed.FPMConfig{Extra: "php_admin_value[post_max_size] = 2M\n"},
				testbed.NginxConfig{ExtraServer: "client_max_body_size 10m;"})
			body := "x=" + strings.Repeat("a", 3_000_000)
			req, _ := http.NewRequest("POST", s.nginx.URL+"/hello.php?"+uniq(), strings.NewReader(body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			status, line := s.do(t, req)
			ev := wantLogged(t, status, line, "request_body_discarded", 200)
			detail, _ := line["detail"].(string)
			if !strings.Contains(detail, "post_max_size = 2M") || !strings.Contains(detail, s.fpm.ConfigPath+":") || !strings.Contains(detail, "3000002 bytes") {
				t.Errorf("detail does not name the setting, its file:line and the body size: %q", detail)
			}
			if !hintsMention(hintsOf(line), "client_max_body_size = 10m") {
				t.Errorf("hints do not name nginx's client_max_body_size as set: %q", hintsOf(line))
			}
			if want := s.messageSource(sink); ev["php_message_from"] != want {
				t.Errorf("PHP's message read from %v, want it from %s", ev["php_message_from"], want)
			}
		})
	}
}

// An upload larger than upload_max_filesize: PHP tells only the script.
func TestUploadLargerThanUploadMaxFilesizeIsNamed(t *testing.T) {
	s := startPHPStack(t, "stderr", testbed.FPMConfig{Extra: "php_admin_value[upload_max_filesize] = 2M\nphp_admin_value[post_max_size] = 64M\n"},
		testbed.NginxConfig{ExtraServer: "client_max_body_size 64m;"})
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	part, _ := w.CreateFormFile("file", "big.bin")
	part.Write(bytes.Repeat([]byte{'z'}, 5<<20))
	w.Close()
	req, _ := http.NewRequest("POST", s.nginx.URL+"/hello.php?"+uniq(), &body)
	req.Header.Set("Content-Type", w.FormDataContentType())
	status, line := s.do(t, req)
	wantLogged(t, status, line, "upload_too_large", 200)
	detail, _ := line["detail"].(string)
	if !strings.Contains(detail, "upload_max_filesize = 2M") || !strings.Contains(detail, "UPLOAD_ERR_INI_SIZE") {
		t.Errorf("detail: %q", detail)
	}
}

// A session written to a full file system: the script answers 200 and the
// session is lost; fcgiscope names the directory and its free space.
func TestSessionOnAFullDiskIsNamed(t *testing.T) {
	full, why := testbed.FullFS(t, 256<<10)
	if full == "" {
		if os.Getenv("CI") == "true" && os.Geteuid() == 0 {
			t.Fatalf("cannot make a full file system as root under CI=true: %s", why)
		}
		t.Skipf("cannot make a full file system here: %s", why)
	}
	for _, sink := range errorSinks {
		t.Run(sink, func(t *testing.T) {
			s := startPHPStack(t, sink, testbed.FPMConfig{Extra: "php_admin_value[session.save_path] = " + full + "\n"}, testbed.NginxConfig{})
			req, _ := http.NewRequest("GET", s.nginx.URL+"/session.php?"+uniq(), nil)
			status, line := s.do(t, req)
			ev := wantLogged(t, status, line, "disk_full", 200)
			if ev["directory"] != full || ev["free_bytes"] != "0" || ev["total_bytes"] == nil {
				t.Errorf("evidence does not name the full directory with its space: %v", ev)
			}
			if want := s.messageSource(sink); ev["php_message_from"] != want {
				t.Errorf("PHP's message read from %v, want it from %s", ev["php_message_from"], want)
			}
		})
	}
}

// A request the slowlog caught completes normally; the log line carries
// the stack php-fpm took.
func TestSlowRequestCarriesTheSlowlogStack(t *testing.T) {
	s := startPHPStack(t, "stderr", testbed.FPMConfig{SlowlogTimeout: time.Second, RequestTerminateTimeout: 10 * time.Second}, testbed.NginxConfig{})
	req, _ := http.NewRequest("GET", s.nginx.URL+"/sleep.php?s=1.6&"+uniq(), nil)
	status, line := s.do(t, req)
	ev := wantLogged(t, status, line, "slow_request", 200)
	stack, _ := ev["slowlog"].(string)
	if !strings.Contains(stack, "sleep.php:") || !strings.Contains(stack, "usleep()") {
		t.Errorf("evidence has no stack in sleep.php: %v", ev)
	}
	if pid, _ := line["fpm_pid"].(float64); pid == 0 {
		t.Errorf("no worker pid: %v", line)
	}
}

// SCRIPT_FILENAME under a root php-fpm does not have (two containers, one
// volume mounted elsewhere) is told apart from a file missing in a root
// that exists.
func TestScriptNotFoundSaysWhichPartIsMissing(t *testing.T) {
	missingRoot := filepath.Join(testbed.ShortTempDir(t), "app", "public")
	t.Run("root missing", func(t *testing.T) {
		s := startPHPStack(t, "stderr", testbed.FPMConfig{}, testbed.NginxConfig{Root: missingRoot})
		req, _ := http.NewRequest("GET", s.nginx.URL+"/index.php?"+uniq(), nil)
		status, line := s.do(t, req)
		ev := wantLogged(t, status, line, "script_not_found", 404)
		detail, _ := line["detail"].(string)
		if !strings.Contains(detail, "whole document root \""+missingRoot+"\"") || !strings.Contains(detail, "different file systems") {
			t.Errorf("detail does not say the root is missing: %q", detail)
		}
		if ev["deepest_existing"] != filepath.Dir(filepath.Dir(missingRoot)) {
			t.Errorf("deepest existing part %v, want %s", ev["deepest_existing"], filepath.Dir(filepath.Dir(missingRoot)))
		}
	})
	t.Run("file missing", func(t *testing.T) {
		s := startPHPStack(t, "stderr", testbed.FPMConfig{}, testbed.NginxConfig{})
		req, _ := http.NewRequest("GET", s.nginx.URL+"/nope.php?"+uniq(), nil)
		status, line := s.do(t, req)
		wantLogged(t, status, line, "script_not_found", 404)
		detail, _ := line["detail"].(string)
		if !strings.Contains(detail, "exists, but the file does not") {
			t.Errorf("detail does not say the root exists and the file does not: %q", detail)
		}
	})
}

// A TCP pool whose listen.allowed_clients leaves fcgiscope out drops every
// connection at once; fcgiscope names the setting, not a dead worker.
func TestAllowedClientsThatLeaveFcgiscopeOutAreNamed(t *testing.T) {
	for _, catch := range []bool{false, true} {
		t.Run(fmt.Sprintf("catch_workers_output=%v", catch), func(t *testing.T) {
			testbed.RequireFPM(t)
			fpm := testbed.StartFPM(t, testbed.FPMConfig{Listen: fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t)),
				CatchWorkersOutput: catch, Extra: "listen.allowed_clients = 127.0.0.2\n"})
			s := startFailStack(t, "tcp", fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath)
			e := s.getProblem(t, "/hello.php", "upstream_client_not_allowed", 502)
			if e.problem.Evidence["connected_from"] != "127.0.0.1" || !strings.HasPrefix(e.problem.Evidence["listen.allowed_clients"], "127.0.0.2") {
				t.Errorf("evidence: %v", e.problem.Evidence)
			}
			if !strings.Contains(e.problem.Detail, fpm.ConfigPath+":") || !hintsMention(e.problem.Hints, "127.0.0.1", "listen.allowed_clients") {
				t.Errorf("detail %q hints %q do not name the setting's file:line and the address to add", e.problem.Detail, e.problem.Hints)
			}
		})
	}
}

// Workers that die on SIGABRT and SIGBUS get their own signal's advice.
func TestEachSignalHasItsOwnAdvice(t *testing.T) {
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	s := startFailStack(t, "unix", fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath)
	for _, tt := range []struct {
		sig  int
		name string
		word string
	}{{6, "SIGABRT", "giving up on itself"}, {7, "SIGBUS", "bad memory access"}} {
		t.Run(tt.name, func(t *testing.T) {
			e := s.getProblem(t, fmt.Sprintf("/crash.php?sig=%d", tt.sig), "worker_crashed", 502)
			if e.problem.Evidence["signal"] != tt.name || !hintsMention(e.problem.Hints, tt.word) {
				t.Errorf("signal %v, hints %q; want %s with its own advice", e.problem.Evidence["signal"], e.problem.Hints, tt.name)
			}
		})
	}
}

// A worker the kernel's OOM killer takes (a container over its memory
// limit) is named as such, with the limit, not as a generic SIGKILL.
func TestOOMKilledWorkerIsNamed(t *testing.T) {
	// Before StartFPM, so that the cgroup goes after php-fpm has stopped.
	cg, why := testbed.MemoryCgroup(t, 96<<20)
	if why != "" {
		t.Skipf("SKIPPING: %s", why)
	}
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{MaxChildren: 1, Extra: "php_admin_value[memory_limit] = -1\n"})
	testbed.JoinCgroup(t, cg, fpm.Pid)
	s := startFailStack(t, "unix", fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath)
	e := s.getProblem(t, "/hog.php?mb=400", "worker_oom_killed", 502)
	ev := e.problem.Evidence
	if ev["cgroup"] != cg || ev["memory_limit_bytes"] != fmt.Sprint(96<<20) || ev["signal"] != "SIGKILL" {
		t.Errorf("evidence does not name the cgroup, its limit and the signal: %v", ev)
	}
	if !strings.Contains(e.problem.Detail, "OOM killer") || !hintsMention(e.problem.Hints, "pm.max_children = 1", "memory_limit") {
		t.Errorf("detail %q hints %q", e.problem.Detail, e.problem.Hints)
	}
}
