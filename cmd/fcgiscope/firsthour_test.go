package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// These tests are the messages a newcomer meets in the first hour: each
// one must say what is wrong and what to type instead, in a line or two.

func runCommand(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := runWith(args, &stdout, &stderr)
	t.Logf("fcgiscope %s -> exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return code, stdout.String(), stderr.String()
}

func lines(s string) int { return strings.Count(strings.TrimRight(s, "\n"), "\n") + 1 }

func TestATypoGetsOneLineWithTheSuggestion(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--upstreams", "unix:/run/php/php8.2-fpm.sock"}, "fcgiscope serve: unknown flag --upstreams; did you mean --upstream?"},
		{[]string{"http", "--rot", "."}, "fcgiscope http: unknown flag --rot; did you mean --root?"},
		{[]string{"doctor", "--ngnix", "/etc/nginx/nginx.conf"}, "fcgiscope doctor: unknown flag --ngnix; did you mean --nginx?"},
		{[]string{"request", "--tiemout", "1s", "/index.php"}, "fcgiscope request: unknown flag --tiemout; did you mean --timeout?"},
		{[]string{"request", "-i", "/index.php"}, "fcgiscope request: unknown flag -i; the response head is always printed"},
		{[]string{"request", "--data", "a=1", "/index.php"}, "fcgiscope request: unknown flag --data; write the body with -d"},
		{[]string{"bench", "--upstreams", "unix:/run/php/php8.2-fpm.sock"}, "fcgiscope bench: unknown flag --upstreams; did you mean --upstream?"},
		{[]string{"doctr"}, `fcgiscope: unknown command "doctr"; did you mean doctor?`},
		{[]string{"serve", "--listen"}, "fcgiscope serve: flag --listen needs a value, as in --listen 127.0.0.1:9001"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := runCommand(t, tt.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			if out != "" || !strings.HasPrefix(errOut, tt.want) || lines(errOut) != 1 {
				t.Errorf("want one line on stderr starting %q, nothing on stdout", tt.want)
			}
		})
	}
}

func TestHelpListsTheCommandsAndHelpCommandShowsItsFlags(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		code, out, _ := runCommand(t, args...)
		if code != exitOK || !strings.Contains(out, "fcgiscope doctor [flags]") || !strings.Contains(out, "fcgiscope request [flags]") || strings.Contains(out, "-admin-listen") {
			t.Errorf("fcgiscope %s: exit %d; want the list of commands, not serve's flags", args[0], code)
		}
	}
	code, out, errOut := runCommand(t, "help", "doctor")
	if all := out + errOut; code != exitOK || !strings.Contains(all, "Usage: fcgiscope doctor") || !strings.Contains(all, "-probe-script") {
		t.Errorf("fcgiscope help doctor: exit %d; want doctor's usage and flags", code)
	}
}

func TestRequestHelpShowsEachDefaultOnce(t *testing.T) {
	_, out, errOut := runCommand(t, "request", "-h")
	if n := strings.Count(out+errOut, "127.0.0.1:9000"); n != 1 {
		t.Errorf("the default address appears %d times in request -h, want once", n)
	}
}

func TestDoctorWithAMissingConfigurationFailsInOneLine(t *testing.T) {
	for _, tt := range []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"--fpm", "/nonexistent/php-fpm.conf"}, "", "fcgiscope doctor: --fpm /nonexistent/php-fpm.conf: no such file or directory. Give php-fpm's main file"},
		{nil, "/nonexistent/env-fpm.conf", "fcgiscope doctor: FCGISCOPE_FPM_CONFIG=/nonexistent/env-fpm.conf: no such file or directory."},
		{[]string{"--nginx", "/nonexistent/nginx.conf"}, "", "fcgiscope doctor: --nginx /nonexistent/nginx.conf: no such file or directory. Give nginx's main file"},
		{[]string{"--nginx", os.TempDir()}, "", "is a directory, not the main configuration file"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			t.Setenv("FCGISCOPE_FPM_CONFIG", tt.env)
			code, out, errOut := runDoctor(t, tt.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d: a check that read nothing it was told to must not pass", code, exitUsage)
			}
			if out != "" || !strings.Contains(errOut, tt.want) || lines(errOut) != 1 {
				t.Errorf("want one line on stderr with %q and no report", tt.want)
			}
		})
	}
}

func TestDoctorJSONHasASchemaVersionAndASummary(t *testing.T) {
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	code, out, _ := runDoctor(t, "--upstream", dead, "--format", "json")
	var doc struct {
		SchemaVersion int `json:"schema_version"`
		Summary       struct {
			Errors, Warnings, Notes, Probes int
			NotChecked                      int `json:"not_checked"`
		} `json:"summary"`
		Findings []struct {
			Severity string `json:"severity"`
		} `json:"findings"`
		NotChecked []string `json:"not_checked"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	errors := 0
	for _, f := range doc.Findings {
		if f.Severity == "error" {
			errors++
		}
	}
	if doc.SchemaVersion != 1 || doc.Summary.Errors != errors || errors == 0 || doc.Summary.Probes < 1 || doc.Summary.NotChecked != len(doc.NotChecked) {
		t.Errorf("schema %d, summary %+v; %d error findings, %d not checked", doc.SchemaVersion, doc.Summary, errors, len(doc.NotChecked))
	}
	if code != exitFailure {
		t.Errorf("exit %d, want 1 for an address nothing listens on", code)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestConsoleLogInAFileHasNoColoursAndHasUnits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fcgiscope.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	log := newLogger("console", zerolog.InfoLevel, f)
	log.Info().Stringer("took", 9571284*time.Nanosecond).Stringer("request_terminate_timeout", 5*time.Second).Msg("php-fpm stopped")
	f.Close()
	b, _ := os.ReadFile(path)
	if bytes.ContainsRune(b, 0x1b) {
		t.Errorf("the log file holds escape codes: %q", b)
	}
	if !bytes.Contains(b, []byte("took=9.571284ms")) || !bytes.Contains(b, []byte("request_terminate_timeout=5s")) {
		t.Errorf("durations are written without their unit: %s", b)
	}
}

func TestAddressInUseNamesTheVariableAndWhoHoldsIt(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().String()
	for _, tt := range []struct {
		cmd  string
		args []string
		want string
	}{
		{"serve", []string{"--listen", taken, "--admin-listen", "", "--upstream", "127.0.0.1:1"}, "FCGISCOPE_LISTEN (--listen) is " + taken},
		{"serve", []string{"--listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--admin-listen", taken, "--upstream", "127.0.0.1:1"}, "FCGISCOPE_ADMIN_LISTEN (--admin-listen) is " + taken},
		{"http", []string{"--listen", taken, "--root", t.TempDir(), "--upstream", "127.0.0.1:1"}, "FCGISCOPE_LISTEN (--listen) is " + taken},
	} {
		t.Run(tt.want, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var code int
			if tt.cmd == "serve" {
				code = serve(ctx, tt.args, nil, &stdout, &stderr)
			} else {
				code = httpMain(ctx, tt.args, nil, &stdout, &stderr)
			}
			out := stdout.String() + stderr.String()
			t.Logf("exit %d:\n%s", code, out)
			holder := fmt.Sprintf("which pid %d (", os.Getpid())
			if code != exitFailure || !strings.Contains(out, tt.want) || !strings.Contains(out, holder) || !strings.Contains(out, "already listens on") {
				t.Errorf("want exit 1 and a message naming %q and %q", tt.want, holder)
			}
		})
	}
}
