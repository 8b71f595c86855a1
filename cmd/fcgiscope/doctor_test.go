package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

func runDoctor(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := doctorMain(ctx, args, &stdout, &stderr)
	t.Logf("fcgiscope doctor %s -> exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return code, stdout.String(), stderr.String()
}

// writeNginxConf writes a one-site nginx.conf passing PHP to pass, with
// the fastcgi.conf Debian ships, and returns its path.
func writeNginxConf(t *testing.T, pass, root string) string {
	t.Helper()
	dir := testbed.ShortTempDir(t)
	params, err := os.ReadFile("../../internal/diagnostics/doctor/testdata/root/etc/nginx/fastcgi.conf")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "fastcgi.conf"), params, 0o644); err != nil {
		t.Fatal(err)
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user www-data;"
	}
	conf := filepath.Join(dir, "nginx.conf")
	body := user + `
events {}
http {
    server {
        listen 127.0.0.1:1;
        root ` + root + `;
        location ~ \.php$ {
            include fastcgi.conf;
            fastcgi_read_timeout 90s;
            fastcgi_pass ` + pass + `;
        }
    }
}
`
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

func TestDoctorSeedMismatch(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	root := testbed.PHPRoot(t)
	dead := "127.0.0.1:" + strconv.Itoa(testbed.FreePort(t))
	conf := writeNginxConf(t, dead, root)

	code, out, _ := runDoctor(t, "--nginx", conf, "--fpm", fpm.ConfigPath)
	if code != exitFailure {
		t.Errorf("exit %d, want 1: the report has an error", code)
	}
	for _, want := range []string{
		"ERROR fastcgi_pass_unreachable: " + dead + " reaches no php-fpm",
		conf + ":10  fastcgi_pass " + dead + ";",
		"fastcgi_pass " + fpm.Addr + ";",
		"upstream_refused",
		"LIVE PROBES",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the report does not say %q", want)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Error("colours in output that is not a terminal")
	}

	code, out, _ = runDoctor(t, "--nginx", conf, "--fpm", fpm.ConfigPath, "--format", "json")
	if code != exitFailure {
		t.Errorf("json: exit %d, want 1", code)
	}
	var report struct {
		Findings []struct {
			ID, Severity, Fix, Cause string
			Nginx                    []struct {
				File string
				Line int
			}
		}
		Probes []struct {
			Addr  string
			OK    bool
			Cause string
		}
		NotChecked []string `json:"not_checked"`
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("--format json is not JSON: %v", err)
	}
	found := false
	for _, f := range report.Findings {
		if f.ID == "fastcgi_pass_unreachable" && f.Severity == "error" && f.Cause == "upstream_refused" &&
			strings.Contains(f.Fix, "fastcgi_pass "+fpm.Addr+";") && len(f.Nginx) == 1 && f.Nginx[0].File == conf && f.Nginx[0].Line == 10 {
			found = true
		}
	}
	if !found {
		t.Errorf("no fastcgi_pass_unreachable finding with the fix, cause and location in the JSON")
	}
	probed := map[string]bool{}
	for _, p := range report.Probes {
		probed[p.Addr] = p.OK
	}
	if ok, seen := probed[dead]; !seen || ok {
		t.Errorf("the dead address was not probed as failing: %v", probed)
	}
	if !probed[fpm.Addr] {
		t.Errorf("php-fpm's socket was not probed as answering: %v", probed)
	}
}

func TestDoctorHealthySetupExitsZero(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{StatusPath: "/fpm-status", PingPath: "/fpm-ping", RequestTerminateTimeout: 30 * time.Second, SlowlogTimeout: 5 * time.Second, CatchWorkersOutput: true})
	root := testbed.PHPRoot(t)
	conf := writeNginxConf(t, fpm.Addr, root)
	code, out, _ := runDoctor(t, "--nginx", conf, "--fpm", fpm.ConfigPath, "--probe-script", "/hello.php")
	if code != exitOK {
		t.Errorf("exit %d, want 0 for a working setup", code)
	}
	for _, want := range []string{"Timeouts fire in a good order", "ping /fpm-ping: pong", "probe /hello.php -> HTTP 200"} {
		if !strings.Contains(out, want) {
			t.Errorf("the report does not say %q", want)
		}
	}
}

func TestDoctorUsageErrors(t *testing.T) {
	empty := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad format", []string{"--format", "xml"}, "text or json"},
		{"argument", []string{"nginx.conf"}, "takes no arguments"},
		{"bad upstream", []string{"--upstream", "9000"}, "accepted forms are"},
		{"missing root", []string{"--root", "/nonexistent/image"}, "not a directory"},
		{"given file missing", []string{"--nginx", "/nonexistent/nginx.conf", "--fpm", "/nonexistent/php-fpm.conf"}, "--nginx /nonexistent/nginx.conf: no such file or directory"},
		{"nothing found", []string{"--root", empty}, "could not check anything"},
		{"unknown flag", []string{"--bogus"}, "bogus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := runDoctor(t, tt.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.Contains(errOut, tt.want) {
				t.Errorf("stderr does not say %q", tt.want)
			}
		})
	}
}

// doctor --k8s, as a CI step over a repository's manifests: the example
// passes, a manifest with a mistake fails with its line, and a path that
// is not there fails in one line.
func TestDoctorChecksKubernetesManifests(t *testing.T) {
	t.Setenv("FCGISCOPE_FPM_CONFIG", "")
	code, out, _ := runDoctor(t, "--k8s", "../../examples/kubernetes/")
	if code != exitOK || !strings.Contains(out, "0 errors, 0 warnings") {
		t.Errorf("the example manifests: exit %d, want 0 with no error or warning", code)
	}

	const broken = "../../internal/diagnostics/doctor/testdata/k8s/broken-manifest.yaml"
	code, out, _ = runDoctor(t, "--k8s", broken, "--format", "json")
	var doc struct {
		Summary  struct{ Errors int } `json:"summary"`
		Findings []struct {
			ID  string `json:"id"`
			K8s []struct {
				File string `json:"file"`
				Line int    `json:"line"`
			} `json:"k8s"`
		} `json:"findings"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	if code != exitFailure || doc.Summary.Errors == 0 {
		t.Errorf("a broken manifest: exit %d with %d errors, want 1 and errors", code, doc.Summary.Errors)
	}
	for _, f := range doc.Findings {
		if strings.HasPrefix(f.ID, "k8s_") && f.ID != "k8s_pod" && (len(f.K8s) == 0 || f.K8s[0].Line == 0 || !strings.HasSuffix(f.K8s[0].File, "broken-manifest.yaml")) {
			t.Errorf("finding %s does not point at a line of the manifest: %+v", f.ID, f.K8s)
		}
	}

	code, out, errOut := runDoctor(t, "--k8s", "/nonexistent/deployment.yaml")
	if code != exitUsage || out != "" || lines(errOut) != 1 || !strings.Contains(errOut, "--k8s /nonexistent/deployment.yaml: no such file or directory") {
		t.Errorf("a missing manifest: exit %d, want 2 and one line", code)
	}
}
