package doctor

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/exchange"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// These tests run the doctor against real php-fpm (and nginx where it
// matters) started by the harness, with nginx configurations written for
// each case. Everything listens on loopback or in the tests' own
// directories.

// nginxSite is the input of siteTemplate.
type nginxSite struct {
	Dir, Root, Pass, Params, Extra, Top, HTTP string
}

var siteTemplate = template.Must(template.New("nginx.conf").Parse(`# Written by the doctor's tests.
{{.Top}}
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path {{.Dir}}/client_body_temp;
    fastcgi_temp_path {{.Dir}}/fastcgi_temp;
    proxy_temp_path {{.Dir}}/proxy_temp;
    uwsgi_temp_path {{.Dir}}/uwsgi_temp;
    scgi_temp_path {{.Dir}}/scgi_temp;
{{.HTTP}}
    server {
        listen 127.0.0.1:1;
        root {{.Root}};

        location ~ \.php$ {
            include {{.Params}};
{{.Extra}}
            fastcgi_pass {{.Pass}};
        }
    }
}
`))

// writeNginx writes an nginx.conf with one PHP location into a new
// directory, with Debian's fastcgi.conf and fastcgi_params beside it, and
// returns its path.
func writeNginx(t *testing.T, site nginxSite) string {
	t.Helper()
	site.Dir = testbed.ShortTempDir(t)
	if site.Params == "" {
		site.Params = "fastcgi.conf"
	}
	if site.Root == "" {
		site.Root = "/var/www/html"
	}
	if site.Top == "" && os.Geteuid() == 0 {
		site.Top = "user www-data;"
	}
	for _, f := range []string{"fastcgi.conf", "fastcgi_params"} {
		b, err := os.ReadFile(filepath.Join("testdata/root/etc/nginx", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(site.Dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var b bytes.Buffer
	if err := siteTemplate.Execute(&b, site); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(site.Dir, "nginx.conf")
	if err := os.WriteFile(conf, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

// check runs the doctor on a real setup and logs its text report.
func check(t *testing.T, d *Doctor) *Report {
	t.Helper()
	if d.Timeout == 0 {
		d.Timeout = time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := d.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	r.WriteText(&text, false)
	t.Logf("report:\n%s", text.String())
	return r
}

func requireFinding(t *testing.T, r *Report, w want) {
	t.Helper()
	if !hasFinding(r, w) {
		t.Errorf("no %s finding %s saying %q", w.severity, w.id, w.says)
	}
}

func requireNo(t *testing.T, r *Report, ids ...string) {
	t.Helper()
	for _, f := range r.Findings {
		for _, id := range ids {
			if f.ID == id {
				t.Errorf("unexpected finding %s: %s", id, f.Title)
			}
		}
	}
}

func deadTCP(t *testing.T) string {
	return "127.0.0.1:" + strconv.Itoa(testbed.FreePort(t))
}

// TestSeedMismatch is the case fcgiscope was started for: nginx passes to
// 127.0.0.1:<port> where nobody listens, php-fpm listens on a unix socket.
// It is read once from the file and once from the output of nginx -T.
func TestSeedMismatch(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	dead := deadTCP(t)
	conf := writeNginx(t, nginxSite{Pass: dead})
	fix := "    fastcgi_pass " + fpm.Addr + ";"

	t.Run("file", func(t *testing.T) {
		r := check(t, &Doctor{NginxConf: conf, FPMConf: fpm.ConfigPath})
		requireFinding(t, r, want{"fastcgi_pass_unreachable", SeverityError, []string{
			conf + ":21", fix, "pool www listens there (" + fpm.ConfigPath + ":", "and answers FastCGI", "upstream_refused", "111: Connection refused",
		}})
		requireNo(t, r, "fpm_not_running", "fpm_config_invalid", "socket_permission")
		if r.Errors() != 1 {
			t.Errorf("%d errors, want 1", r.Errors())
		}
		var text bytes.Buffer
		r.WriteText(&text, false)
		if !strings.Contains(text.String(), "write\n             "+fix+"\n") {
			t.Errorf("the text report does not show the directive on a line of its own:\n%s", text.String())
		}
	})

	t.Run("nginx -T", func(t *testing.T) {
		command, lookPath := nginxT(t, conf)
		bin, _ := lookPath("nginx")
		r := check(t, &Doctor{FPMConf: fpm.ConfigPath, Command: command, LookPath: lookPath})
		if r.Nginx != bin+" -T" {
			t.Errorf("nginx configuration read from %q, want nginx -T", r.Nginx)
		}
		requireFinding(t, r, want{"fastcgi_pass_unreachable", SeverityError, []string{conf + ":21", fix}})
	})
}

// nginxT returns Command and LookPath hooks that run the real nginx -T on
// conf instead of /etc/nginx/nginx.conf.
func nginxT(t *testing.T, conf string) (func(context.Context, string, ...string) ([]byte, []byte, error), func(string) (string, error)) {
	bin := testbed.RequireNginx(t)
	dir := filepath.Dir(conf)
	lookPath := func(name string) (string, error) {
		if name == "nginx" {
			return bin, nil
		}
		return exec.LookPath(name)
	}
	command := func(ctx context.Context, name string, args ...string) ([]byte, []byte, error) {
		if name == bin {
			args = append(args, "-p", dir+"/", "-e", filepath.Join(dir, "error.log"), "-c", conf)
		}
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.Bytes(), stderr.Bytes(), err
	}
	return command, lookPath
}

func TestNginxConfigInvalid(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	conf := writeNginx(t, nginxSite{Pass: fpm.Addr, Extra: "            fastcgi_bogus on;"})
	command, lookPath := nginxT(t, conf)
	r := check(t, &Doctor{FPMConf: fpm.ConfigPath, Command: command, LookPath: lookPath})
	requireFinding(t, r, want{"nginx_config_invalid", SeverityError, []string{"unknown directive \"fastcgi_bogus\"", conf + ":20", "nginx -t"}})
}

func TestSocketMissingAndStale(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	fpm.Stop()
	os.Remove(fpm.Address)
	conf := writeNginx(t, nginxSite{Pass: fpm.Addr})

	r := check(t, &Doctor{NginxConf: conf, FPMConf: fpm.ConfigPath})
	requireFinding(t, r, want{"socket_missing", SeverityError, []string{
		"The socket " + fpm.Address + " does not exist", "no php-fpm master process runs with " + fpm.ConfigPath, "Start php-fpm", "2: No such file or directory", "upstream_socket_missing",
	}})
	requireNo(t, r, "fpm_not_running")

	// A socket file nobody accepts on, as a killed php-fpm leaves it.
	ln, err := net.Listen("unix", fpm.Address)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	defer os.Remove(fpm.Address)
	r = check(t, &Doctor{NginxConf: conf, FPMConf: fpm.ConfigPath})
	requireFinding(t, r, want{"socket_refused", SeverityError, []string{"is stale", "replaces the stale file", "upstream_socket_stale"}})
}

func TestFPMNotRunningOnTCP(t *testing.T) {
	listen := deadTCP(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{Listen: listen})
	fpm.Stop()
	conf := writeNginx(t, nginxSite{Pass: listen})
	r := check(t, &Doctor{NginxConf: conf, FPMConf: fpm.ConfigPath})
	requireFinding(t, r, want{"fpm_not_running", SeverityError, []string{"php-fpm is not running: nothing listens on " + listen, "no php-fpm master process runs with " + fpm.ConfigPath, "-y " + fpm.ConfigPath}})
	requireNo(t, r, "fastcgi_pass_unreachable")
}

func TestSocketPermission(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the socket must belong to someone other than nginx's user www-data")
	}
	fpm := testbed.StartFPM(t, testbed.FPMConfig{ListenMode: "0600"})
	conf := writeNginx(t, nginxSite{Pass: fpm.Addr, Top: "user www-data;"})
	r := check(t, &Doctor{NginxConf: conf, FPMConf: fpm.ConfigPath})
	requireFinding(t, r, want{"socket_permission", SeverityError, []string{
		"nginx's user www-data may not connect to " + fpm.Addr, "root:root mode 0600", conf + ":2", "listen.owner = www-data", "change\n    listen.mode = 0600\nto\n    listen.mode = 0660", "13: Permission denied",
	}})
}

// TestNotFastCGI points nginx's fastcgi_pass at an HTTP server: a real
// nginx, as happens when fastcgi_pass and proxy_pass get mixed up.
func TestNotFastCGI(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	web := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: fpm.Addr})
	httpAddr := strings.TrimPrefix(web.URL, "http://")
	conf := writeNginx(t, nginxSite{Pass: httpAddr})
	r := check(t, &Doctor{NginxConf: conf, FPMConf: fpm.ConfigPath})
	requireFinding(t, r, want{"not_fastcgi", SeverityError, []string{httpAddr + " answers, but not in FastCGI", "An HTTP server listens there", "upstream_not_fastcgi", "fastcgi_pass " + fpm.Addr + ";", "unsupported FastCGI protocol version: 72"}})
}

func TestTimeoutOrder(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{RequestTerminateTimeout: 120 * time.Second})
	conf := writeNginx(t, nginxSite{Pass: fpm.Addr, Extra: "            fastcgi_read_timeout 30s;"})
	r := check(t, &Doctor{NginxConf: conf, FPMConf: fpm.ConfigPath})
	requireFinding(t, r, want{"timeout_order", SeverityWarning, []string{
		"nginx gives up (30s) before php-fpm stops the request (request_terminate_timeout 120s)", conf + ":20", fpm.ConfigPath + ":", "504 Gateway Time-out", "request_terminate_timeout = 21s",
	}})
}

func TestScriptFilenameAndProbe(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	root := testbed.PHPRoot(t)

	t.Run("fastcgi_params", func(t *testing.T) {
		conf := writeNginx(t, nginxSite{Pass: fpm.Addr, Root: root, Params: "fastcgi_params"})
		r := check(t, &Doctor{NginxConf: conf, FPMConf: fpm.ConfigPath, ProbeScript: "/hello.php"})
		requireFinding(t, r, want{"script_filename", SeverityError, []string{"sends no SCRIPT_FILENAME", "include fastcgi.conf;", conf + ":19"}})
		requireFinding(t, r, want{"script_filename", SeverityError, []string{"php-fpm does not find /hello.php: \"Primary script unknown\"", "script_not_found"}})
	})
	t.Run("root php-fpm does not see", func(t *testing.T) {
		conf := writeNginx(t, nginxSite{Pass: fpm.Addr, Root: "/nonexistent/www"})
		r := check(t, &Doctor{NginxConf: conf, FPMConf: fpm.ConfigPath, ProbeScript: "/hello.php"})
		requireFinding(t, r, want{"script_filename", SeverityError, []string{"/nonexistent/www/hello.php", "root /nonexistent/www;", conf + ":16"}})
	})
	t.Run("probe passes", func(t *testing.T) {
		conf := writeNginx(t, nginxSite{Pass: fpm.Addr, Root: root})
		r := check(t, &Doctor{NginxConf: conf, FPMConf: fpm.ConfigPath, ProbeScript: "/hello.php?x=1"})
		requireNo(t, r, "script_filename", "probe_failed")
		if !probeSays(r, fpm.Addr, "probe /hello.php -> HTTP 200") {
			t.Errorf("the probe of %s does not report the script's 200", fpm.Addr)
		}
	})
	t.Run("a probe script that does not exist", func(t *testing.T) {
		// Debian's snippets/fastcgi-php.conf checks the script with
		// try_files, so nginx answers 404 without asking php-fpm: the
		// doctor must say the script is missing, not blame php-fpm.
		conf := writeNginx(t, nginxSite{Pass: fpm.Addr, Root: root, Extra: "            try_files $fastcgi_script_name =404;"})
		r := check(t, &Doctor{NginxConf: conf, FPMConf: fpm.ConfigPath, ProbeScript: "/nope.php"})
		requireNo(t, r, "script_filename", "probe_failed")
		want := filepath.Join(root, "nope.php") + " does not exist in nginx's document root " + root + " (root at " + conf + ":16), so nginx answers 404 itself without asking php-fpm (try_files at " + conf + ":20)"
		if !slices.ContainsFunc(r.NotChecked, func(n string) bool { return strings.Contains(n, want) }) {
			t.Errorf("not checked does not say the probe script is missing (%q); it says %q", want, r.NotChecked)
		}
	})
	t.Run("upstream alone", func(t *testing.T) {
		addr, _ := fcgi.ParseAddr(fpm.Addr)
		r := check(t, &Doctor{Upstream: addr, FPMConf: fpm.ConfigPath, ProbeScript: filepath.Join(root, "hello.php")})
		requireNo(t, r, "script_filename", "probe_failed", "fastcgi_pass_unreachable")
		if !probeSays(r, fpm.Addr, "-> HTTP 200") {
			t.Errorf("the probe of %s does not report the script's 200", fpm.Addr)
		}
	})
}

func probeSays(r *Report, addr, s string) bool {
	for _, p := range r.Probes {
		if p.Addr != addr || !p.OK {
			continue
		}
		for _, v := range p.Via {
			if strings.Contains(v, s) {
				return true
			}
		}
	}
	return false
}

func TestUpstreamAloneDead(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	dead, _ := fcgi.ParseAddr(deadTCP(t))
	r := check(t, &Doctor{Upstream: dead, FPMConf: fpm.ConfigPath})
	requireFinding(t, r, want{"fastcgi_pass_unreachable", SeverityError, []string{"upstream_refused", "Use " + fpm.Addr}})
}

func TestObservabilityAndPing(t *testing.T) {
	t.Run("bare pool", func(t *testing.T) {
		fpm := testbed.StartFPM(t, testbed.FPMConfig{RequestTerminateTimeout: 20 * time.Second})
		conf := writeNginx(t, nginxSite{Pass: fpm.Addr})
		r := check(t, &Doctor{NginxConf: conf, FPMConf: fpm.ConfigPath})
		requireFinding(t, r, want{"observability", SeverityInfo, []string{"no pm.status_path", "pm.status_path = /fpm-status"}})
		requireFinding(t, r, want{"observability", SeverityWarning, []string{"no slow log", "leave no stack trace", "request_slowlog_timeout = 5s"}})
		requireFinding(t, r, want{"observability", SeverityInfo, []string{"catch_workers_output = yes"}})
	})
	t.Run("pool that leaves a trace", func(t *testing.T) {
		fpm := testbed.StartFPM(t, testbed.FPMConfig{StatusPath: "/fpm-status", PingPath: "/fpm-ping", SlowlogTimeout: 2 * time.Second, CatchWorkersOutput: true})
		conf := writeNginx(t, nginxSite{Pass: fpm.Addr})
		r := check(t, &Doctor{NginxConf: conf, FPMConf: fpm.ConfigPath})
		requireNo(t, r, "observability", "ping_failed")
		found := false
		for _, p := range r.Probes {
			if p.Addr == fpm.Addr && p.Ping == "/fpm-ping" && p.PingResult == "pong" {
				found = true
			}
		}
		if !found {
			t.Errorf("no probe of %s with a pong from /fpm-ping: %+v", fpm.Addr, r.Probes)
		}
	})
}

func TestFPMConfigInvalid(t *testing.T) {
	testbed.RequireFPM(t)
	dir := testbed.ShortTempDir(t)
	conf := filepath.Join(dir, "php-fpm.conf")
	body := "[global]\nerror_log = " + dir + "/fpm.log\n\n[www]\nlisten = " + dir + "/fpm.sock\npm = dynamc\npm.max_children = 2\n"
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	r := check(t, &Doctor{Upstream: fcgi.Addr{Network: "unix", Address: dir + "/fpm.sock"}, FPMConf: conf})
	requireFinding(t, r, want{"fpm_config_invalid", SeverityError, []string{"php-fpm rejects its configuration", conf + ":6", "invalid process manager", "-t -y " + conf}})
}

func TestKeepaliveAndCapacity(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{MaxChildren: 2, Extra: "php_admin_value[memory_limit] = 64G"})
	conf := writeNginx(t, nginxSite{
		Pass:  "php",
		HTTP:  "    upstream php {\n        server " + fpm.Addr + ";\n        keepalive 4;\n    }",
		Extra: "            fastcgi_keep_conn on;",
	})
	r := check(t, &Doctor{NginxConf: conf, FPMConf: fpm.ConfigPath})
	requireFinding(t, r, want{"keepalive_pitfalls", SeverityWarning, []string{"nginx can keep 4 idle connections to pool www, which has 2 workers", conf + ":15"}})
	requireFinding(t, r, want{"pool_capacity", SeverityWarning, []string{"pm.max_children 2 × memory_limit 64.0 GiB", "OOM killer", "worker_crashed"}})
	requireNo(t, r, "fastcgi_pass_unreachable")
}

// When nginx passes to fcgiscope, the doctor says so, follows fcgiscope to
// the php-fpm behind it, and checks fcgiscope's own limits against nginx's.
func TestChainThroughFcgiscope(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	sidecar := func(t *testing.T, upstream string, env ...string) string {
		listen := "unix:" + filepath.Join(testbed.ShortTempDir(t), "fcgiscope.sock")
		testbed.StartFcgiscope(t, append([]string{"FCGISCOPE_LISTEN=" + listen, "FCGISCOPE_LISTEN_MODE=0666",
			"FCGISCOPE_UPSTREAM=" + upstream, "FCGISCOPE_NGINX_CONFIG=-", "FCGISCOPE_FPM_CONFIG=" + fpm.ConfigPath}, env...)...)
		return listen
	}

	t.Run("working", func(t *testing.T) {
		listen := sidecar(t, fpm.Addr)
		conf := writeNginx(t, nginxSite{Pass: listen})
		r := check(t, &Doctor{NginxConf: conf, FPMConf: fpm.ConfigPath})
		requireFinding(t, r, want{"fcgiscope_in_chain", SeverityInfo, []string{listen, "relays to " + fpm.Addr, conf + ":21"}})
		requireNo(t, r, "fastcgi_pass_unknown_pool", "fcgiscope_queue_sooner", "fcgiscope_read_sooner", "fcgiscope_header_limit")
		if r.Errors() != 0 {
			t.Errorf("%d errors on a working chain", r.Errors())
		}
		// The pool behind fcgiscope is the one nginx's timeouts are
		// checked against.
		requireFinding(t, r, want{"timeout_order", SeverityWarning, []string{"pool www"}})
	})

	t.Run("php-fpm behind fcgiscope is down", func(t *testing.T) {
		gone := "unix:" + filepath.Join(testbed.ShortTempDir(t), "php-fpm.sock")
		listen := sidecar(t, gone)
		conf := writeNginx(t, nginxSite{Pass: listen})
		r := check(t, &Doctor{NginxConf: conf, FPMConf: fpm.ConfigPath})
		requireFinding(t, r, want{"fastcgi_pass_unreachable", SeverityError, []string{"fcgiscope at " + listen + ", which relays them to " + gone,
			conf + ":21", "upstream_socket_missing", "Set fcgiscope's FCGISCOPE_UPSTREAM=" + fpm.Addr}})
	})

	t.Run("fcgiscope gives up sooner than nginx", func(t *testing.T) {
		listen := sidecar(t, fpm.Addr, "FCGISCOPE_QUEUE_TIMEOUT=5s", "FCGISCOPE_READ_TIMEOUT=30s", "FCGISCOPE_MAX_HEADER_BYTES=4096")
		conf := writeNginx(t, nginxSite{Pass: listen, Extra: "            fastcgi_buffer_size 16k;"})
		r := check(t, &Doctor{NginxConf: conf, FPMConf: fpm.ConfigPath})
		requireFinding(t, r, want{"fcgiscope_queue_sooner", SeverityWarning, []string{"FCGISCOPE_QUEUE_TIMEOUT=5s", "fastcgi_read_timeout 60s", conf + ":21"}})
		requireFinding(t, r, want{"fcgiscope_read_sooner", SeverityWarning, []string{"FCGISCOPE_READ_TIMEOUT=30s"}})
		requireFinding(t, r, want{"fcgiscope_header_limit", SeverityWarning, []string{"FCGISCOPE_MAX_HEADER_BYTES", conf + ":20", "16384"}})
	})
}

// php-fpm's own word that a pool ran out of workers is reported with the
// line that sets pm.max_children. An ondemand pool of one worker writes it
// the moment a second request arrives.
func TestMaxChildrenReachedInTheLog(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{PM: "ondemand", MaxChildren: 1})
	addr, _ := fcgi.ParseAddr(fpm.Addr)
	script := filepath.Join(testbed.PHPRoot(t), "sleep.php")
	// The second request comes while the only worker runs the first, so
	// that php-fpm's master sees a connection it has no worker for. Sent
	// at once, both could wait in the listen queue before the master
	// looks, and on a loaded machine it then starts the one worker for
	// both without a word.
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * 300 * time.Millisecond)
			var tr outcome.Trace
			exchange.Do(context.Background(), &exchange.Request{Upstream: addr, Params: []fcgi.Pair{
				{Name: "SCRIPT_FILENAME", Value: script}, {Name: "QUERY_STRING", Value: "s=1"}, {Name: "REQUEST_METHOD", Value: "GET"},
			}}, &tr)
		})
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(fpm.ReadErrorLog(), "max_children") {
		if time.Now().After(deadline) {
			t.Fatalf("php-fpm did not log that it reached pm.max_children:\n%s", fpm.ReadErrorLog())
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := check(t, &Doctor{Upstream: addr, FPMConf: fpm.ConfigPath})
	requireFinding(t, r, want{"max_children_reached", SeverityWarning, []string{
		"Pool www ran out of workers once in the last 7 days", "server reached max_children setting (1)", "pm.max_children = 1 at " + fpm.ConfigPath + ":", "upstream_backlog_full",
	}})
}
