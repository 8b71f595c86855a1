package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/hostprobe"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/nginxconf"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// refuseAll stands in for the live probe on fixtures: TCP addresses refuse,
// unix sockets are missing, as on a machine where php-fpm is stopped.
func refuseAll(_ context.Context, a fcgi.Addr) (hostprobe.Responder, error) {
	errno := syscall.ECONNREFUSED
	if a.Network == "unix" {
		errno = syscall.ENOENT
	}
	return hostprobe.Responder{}, &outcome.DialError{Addr: a, Err: &net.OpError{Op: "dial", Net: a.Network, Err: os.NewSyscallError("connect", errno)}}
}

// answer makes the fake probe answer on the given addresses and refuse
// elsewhere.
func answer(addrs ...string) func(context.Context, fcgi.Addr) (hostprobe.Responder, error) {
	return func(ctx context.Context, a fcgi.Addr) (hostprobe.Responder, error) {
		for _, s := range addrs {
			if a.String() == s {
				return hostprobe.Responder{Addr: a, Latency: 300 * time.Microsecond}, nil
			}
		}
		return refuseAll(ctx, a)
	}
}

// fixture returns a Doctor that reads testdata/root as "/" and touches
// nothing of this host.
func fixture(t *testing.T, nginxConf, fpmConf string) *Doctor {
	t.Helper()
	root, err := filepath.Abs("testdata/root")
	if err != nil {
		t.Fatal(err)
	}
	return &Doctor{
		Root:       root,
		NginxConf:  nginxConf,
		FPMConf:    fpmConf,
		Probe:      refuseAll,
		Responders: func(context.Context) []hostprobe.Responder { return nil },
		Masters:    func() ([]FPMMaster, error) { return nil, nil },
	}
}

// want describes one finding a case must produce: its id and severity,
// and strings its text must contain.
type want struct {
	id       string
	severity Severity
	says     []string
}

const (
	debianFPMConf = "/etc/php/8.2/fpm/php-fpm.conf"
	debianSock    = "unix:/run/php/php8.2-fpm.sock"
)

func TestFixtures(t *testing.T) {
	tests := []struct {
		name         string
		nginx, fpm   string
		probe        func(context.Context, fcgi.Addr) (hostprobe.Responder, error)
		masters      []FPMMaster
		want         []want
		absent       []string
		nginxFiles   int
		notCheckedOK []string
	}{
		{
			name:  "Debian defaults: no PHP location, php-fpm stopped",
			nginx: "/etc/nginx/nginx.conf", fpm: debianFPMConf,
			nginxFiles: 3, // nginx.conf, mime.types, sites-enabled/default
			want: []want{
				{"no_fastcgi_pass", SeverityInfo, []string{"fastcgi_pass " + debianSock + ";", "/etc/nginx/sites-enabled/default:21", "source code"}},
				{"fpm_not_running", SeverityWarning, []string{"systemctl start php8.2-fpm", "nginx sends no requests"}},
				{"observability", SeverityInfo, []string{"pm.status_path = /fpm-status", "/etc/php/8.2/fpm/pool.d/www.conf:4"}},
				{"observability", SeverityInfo, []string{"request_slowlog_timeout"}},
				{"observability", SeverityInfo, []string{"catch_workers_output = yes"}},
			},
			absent: []string{"script_filename", "socket_permission", "fpm_config_warning", "timeout_order"},
		},
		{
			name:  "Debian's commented PHP block uncommented: a php7.4 socket on a php8.2 machine",
			nginx: "/etc/nginx/case-uncommented.conf", fpm: debianFPMConf,
			want: []want{
				{"fastcgi_pass_unreachable", SeverityError, []string{
					"/etc/nginx/sites-available/uncommented:60",
					"fastcgi_pass unix:/run/php/php8.2-fpm.sock;",
					"No pool in /etc/php/8.2/fpm/php-fpm.conf listens there",
					"2: No such file or directory",
				}},
				{"timeout_order", SeverityWarning, []string{"request_terminate_timeout = 44s", "fastcgi_read_timeout 60s; (nginx's default", "504 Gateway Time-out"}},
			},
			absent: []string{"script_filename", "socket_permission", "no_fastcgi_pass"},
		},
		{
			name:  "the seed: nginx on 127.0.0.1:9000, php-fpm on a unix socket",
			nginx: "/etc/nginx/case-seed.conf", fpm: debianFPMConf,
			probe: answer(debianSock),
			want: []want{
				{"fastcgi_pass_unreachable", SeverityError, []string{
					"/etc/nginx/case-seed.conf:13",
					"In /etc/nginx/case-seed.conf:13 write\n    fastcgi_pass unix:/run/php/php8.2-fpm.sock;",
					"pool www listens there (/etc/php/8.2/fpm/pool.d/www.conf:41) and answers FastCGI",
					"111: Connection refused",
				}},
			},
			absent: []string{"script_filename", "socket_permission", "fpm_not_running"},
		},
		{
			name:  "include fastcgi_params: no SCRIPT_FILENAME",
			nginx: "/etc/nginx/case-params.conf", fpm: debianFPMConf,
			want: []want{
				{"script_filename", SeverityError, []string{
					"In /etc/nginx/case-params.conf:11 replace\n    include fastcgi_params;\nwith\n    include fastcgi.conf;",
					"Debian's fastcgi_params does not set SCRIPT_FILENAME",
					"Primary script unknown",
				}},
				{"socket_missing", SeverityError, []string{"systemctl start php8.2-fpm", "no php-fpm master process runs with /etc/php/8.2/fpm/php-fpm.conf"}},
			},
			absent: []string{"fastcgi_pass_unreachable", "socket_permission"},
		},
		{
			name:  "params set at server level through a glob include, lost in a location with its own",
			nginx: "/etc/nginx/case-inherit.conf", fpm: debianFPMConf,
			probe: answer(debianSock),
			want: []want{
				{"script_filename", SeverityError, []string{"location ~ ^/api/.+\\.php$", "inherits none", "/etc/nginx/case-inherit.conf:12"}},
			},
			absent: []string{"fastcgi_pass_unreachable"},
		},
		{
			name:  "upstream blocks: a server line to fix, keepalive that pins every worker, keepalive that does nothing",
			nginx: "/etc/nginx/case-upstream.conf", fpm: debianFPMConf,
			probe: answer(debianSock),
			want: []want{
				{"fastcgi_pass_unreachable", SeverityError, []string{"In /etc/nginx/case-upstream.conf:8 write\n    server unix:/run/php/php8.2-fpm.sock max_fails=3;"}},
				{"keepalive_pitfalls", SeverityInfo, []string{"keepalive 4 in upstream php_nokeep does nothing", "fastcgi_keep_conn on;"}},
			},
		},
		{
			name:  "no user directive: nginx runs as nobody, the socket is www-data's",
			nginx: "/etc/nginx/case-nouser.conf", fpm: debianFPMConf,
			want: []want{
				{"socket_permission", SeverityError, []string{
					"nginx's user nobody may not connect to " + debianSock,
					"www-data:www-data mode 0660",
					// The fix points at the lines that hold the wrong values.
					"At /etc/php/8.2/fpm/pool.d/www.conf:53 change\n    listen.owner = www-data\nto\n    listen.owner = nobody",
					"At /etc/php/8.2/fpm/pool.d/www.conf:54 change\n    listen.group = www-data\nto\n    listen.group = nogroup",
					"/etc/php/8.2/fpm/pool.d/www.conf:41",
					"13: Permission denied",
				}},
			},
		},
		{
			name:  "nginx gives up before php-fpm's request_terminate_timeout",
			nginx: "/etc/nginx/case-timeouts.conf", fpm: "/etc/php/8.2/fpm/case-timeouts.conf",
			probe: answer(debianSock),
			want: []want{
				{"timeout_order", SeverityWarning, []string{"nginx gives up (30s) before php-fpm stops the request (request_terminate_timeout 120s)", "/etc/nginx/case-timeouts.conf:5", "/etc/php/8.2/fpm/case-timeouts.conf:14", "max_execution_time = 60s is not shorter than nginx's 30s", "request_terminate_timeout = 21s", "fastcgi_read_timeout 162s;"}},
				{"timeout_order", SeverityInfo, []string{"php-fpm stops slow requests at 120s, before nginx's 300s", "/etc/nginx/case-timeouts.conf:16"}},
			},
			absent: []string{"socket_permission", "fastcgi_pass_unreachable", "fpm_not_running"},
		},
		{
			name:  "a pool that leaves a trace",
			nginx: "/etc/nginx/case-seed.conf", fpm: "/etc/php/8.2/fpm/case-good.conf",
			probe:   answer(debianSock),
			masters: []FPMMaster{{Pid: 42, Config: "/etc/php/8.2/fpm/case-good.conf"}},
			want: []want{
				{"timeout_order", SeverityInfo, []string{"Timeouts fire in a good order", "worker_timeout_killed"}},
			},
			absent: []string{"observability", "fpm_not_running"},
		},
		{
			name:  "fastcgi_pass with a variable",
			nginx: "/etc/nginx/case-variable.conf", fpm: debianFPMConf,
			want: []want{
				{"fastcgi_pass_variable", SeverityInfo, []string{"fastcgi_pass $backend", "/etc/nginx/case-variable.conf:13"}},
			},
			absent: []string{"fastcgi_pass_unreachable", "script_filename"},
		},
		{
			name:  "a php-fpm setting php-fpm refuses",
			nginx: "/etc/nginx/case-seed.conf", fpm: "/etc/php/8.2/fpm/case-badpm.conf",
			want: []want{
				{"fpm_config_warning", SeverityError, []string{"/etc/php/8.2/fpm/case-badpm.conf:9", "dynamc"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := fixture(t, tt.nginx, tt.fpm)
			if tt.probe != nil {
				d.Probe = tt.probe
			}
			// php-fpm runs when the fake probe finds it, unless the case
			// says otherwise.
			masters := tt.masters
			if masters == nil && tt.probe != nil {
				masters = []FPMMaster{{Pid: 4242, Config: tt.fpm}}
			}
			d.Masters = func() ([]FPMMaster, error) { return masters, nil }
			r, err := d.Check(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var text bytes.Buffer
			if err := r.WriteText(&text, false); err != nil {
				t.Fatal(err)
			}
			t.Logf("report:\n%s", text.String())
			if tt.nginxFiles > 0 && len(r.NginxFiles) != tt.nginxFiles {
				t.Errorf("read %d nginx files %q, want %d", len(r.NginxFiles), r.NginxFiles, tt.nginxFiles)
			}
			for _, w := range tt.want {
				if !hasFinding(r, w) {
					t.Errorf("no %s finding %s saying %q", w.severity, w.id, w.says)
				}
			}
			for _, id := range tt.absent {
				for _, f := range r.Findings {
					if f.ID == id {
						t.Errorf("unexpected finding %s: %s", id, f.Title)
					}
				}
			}
			for _, f := range r.Findings {
				if f.Title == "" || f.Severity == "" {
					t.Errorf("finding %s has no title or severity", f.ID)
				}
				if f.Severity != SeverityInfo && f.Fix == "" {
					t.Errorf("%s finding %s says no fix", f.Severity, f.ID)
				}
			}
		})
	}
}

func hasFinding(r *Report, w want) bool {
	for _, f := range r.Findings {
		if f.ID != w.id || f.Severity != w.severity {
			continue
		}
		b, _ := json.Marshal(f)
		var all strings.Builder
		all.WriteString(f.Title + "\n" + f.Detail + "\n" + f.Impact + "\n" + f.Fix + "\n" + string(b))
		for _, l := range append(f.Nginx, f.FPM...) {
			all.WriteString("\n" + l.String())
		}
		ok := true
		for _, s := range w.says {
			if !strings.Contains(all.String(), s) {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func TestFPMTestMessages(t *testing.T) {
	out := "[27-Nov-2026 13:02:22] ERROR: [/tmp/exp/bad.conf:10] unable to parse value for entry 'pm': invalid process manager (static, dynamic or ondemand)\n" +
		"[27-Nov-2026 13:02:22] ERROR: failed to load configuration file '/tmp/exp/bad.conf'\n" +
		"[27-Nov-2026 13:02:22] ERROR: FPM initialization failed\n"
	errs, warns, where := fpmTestMessages(out)
	if len(errs) != 3 || len(warns) != 0 {
		t.Fatalf("errors %q, warnings %q", errs, warns)
	}
	if where.String() != "/tmp/exp/bad.conf:10" {
		t.Errorf("where = %s", where)
	}
	if !strings.HasPrefix(errs[0], "[/tmp/exp/bad.conf:10] unable to parse") {
		t.Errorf("first error = %q: the timestamp should be gone", errs[0])
	}
}

func TestDiskFinding(t *testing.T) {
	d := diskDir{"/var/lib/nginx", "nginx's fastcgi_temp_path", "large responses fail"}
	const gib = 1 << 30
	for _, tt := range []struct {
		free, total uint64
		sev         Severity
	}{
		{50 * gib, 100 * gib, ""},
		{3 * gib, 100 * gib, SeverityWarning},
		{200 << 20, 1 * gib, SeverityWarning},
		{500 << 20, 100 * gib, SeverityError},
		{10 << 20, 1 * gib, SeverityError},
	} {
		f, ok := diskFinding(d, tt.free, tt.total, 1000, 1000)
		if (tt.sev == "") == ok || (ok && f.Severity != tt.sev) {
			t.Errorf("free %d of %d: finding %v %q, want %q", tt.free, tt.total, ok, f.Severity, tt.sev)
		}
	}
	if f, ok := diskFinding(d, 50*gib, 100*gib, 5, 1000); !ok || f.Severity != SeverityWarning || !strings.Contains(f.Title, "inodes") {
		t.Errorf("few inodes: %v %+v", ok, f)
	}
}

func TestLocationMatches(t *testing.T) {
	loc := func(args ...string) *nginxconf.Directive { return &nginxconf.Directive{Name: "location", Args: args} }
	for _, tt := range []struct {
		loc  *nginxconf.Directive
		path string
		want bool
	}{
		{loc("~", `\.php$`), "/index.php", true},
		{loc("~", `\.php$`), "/index.html", false},
		{loc("~*", `\.PHP$`), "/index.php", true},
		{loc("~", `[^/]\.php(/|$)`), "/index.php/x", true},
		{loc("=", "/status"), "/status", true},
		{loc("^~", "/legacy/"), "/index.php", false},
		{loc("/"), "/index.php", true},
	} {
		if got := locationMatches(tt.loc, tt.path); got != tt.want {
			t.Errorf("location %v matches %s = %v, want %v", tt.loc.Args, tt.path, got, tt.want)
		}
	}
}
