package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/child"
)

// NginxConfig configures the nginx started by StartNginx.
type NginxConfig struct {
	// FastCGIPass is the backend in nginx syntax: "127.0.0.1:9001" or
	// "unix:/path.sock". Required.
	FastCGIPass string
	// Root is the document root; SCRIPT_FILENAME is
	// $document_root$fastcgi_script_name. Empty means a new PHPRoot.
	Root string
	// KeepConn, when true, routes requests through
	// `upstream fcgi_backend { server <FastCGIPass>; keepalive 8; }` with
	// fastcgi_keep_conn on, so nginx reuses FastCGI connections; when false,
	// nginx opens one connection per request.
	KeepConn bool
	// ReadTimeout is fastcgi_read_timeout (millisecond precision); 0 keeps
	// nginx's default of 60 s.
	ReadTimeout time.Duration
	// ExtraLocation is inserted verbatim at the end of the PHP location.
	ExtraLocation string
	// ExtraServer is inserted verbatim into the server block, before the PHP
	// location.
	ExtraServer string
}

// Nginx is a running nginx master started by StartNginx.
type Nginx struct {
	Pid int
	URL string // "http://127.0.0.1:PORT"
	// ErrorLog is written at level info, so FastCGI stderr ("FastCGI sent in
	// stderr", an error) and connection-level messages both appear.
	ErrorLog string
	// AccessLog has one line per request:
	// $remote_addr "$request" $status $body_bytes_sent $request_time $upstream_status
	AccessLog string
	// ConfigPath is the nginx.conf written, for a fcgiscope that reads
	// nginx's settings (FCGISCOPE_NGINX_CONFIG).
	ConfigPath string
	Dir        string

	bin      string
	proc     *child.Child
	stopOnce sync.Once
}

// nginxTemplate renders nginx.conf. Every path nginx writes (pid, logs, lock,
// temp files) lives in Dir, so nothing touches /var/lib/nginx or /var/log/nginx.
// The FastCGI params are the set from Debian's /etc/nginx/fastcgi_params,
// written inline so that tests do not depend on files in /etc.
var nginxTemplate = template.Must(template.New("nginx.conf").Parse(`# Written by fcgiscope internal/testbed.
daemon off;
master_process on;
worker_processes 1;
{{- if .Root}}
user root;
{{- end}}
pid {{.Dir}}/nginx.pid;
lock_file {{.Dir}}/nginx.lock;
error_log {{.ErrorLog}} info;

events {
    worker_connections 1024;
}

http {
    default_type application/octet-stream;
    client_body_temp_path {{.Dir}}/client_body_temp;
    proxy_temp_path {{.Dir}}/proxy_temp;
    fastcgi_temp_path {{.Dir}}/fastcgi_temp;
    uwsgi_temp_path {{.Dir}}/uwsgi_temp;
    scgi_temp_path {{.Dir}}/scgi_temp;

    log_format testbed '$remote_addr "$request" $status $body_bytes_sent $request_time $upstream_status';
    access_log {{.AccessLog}} testbed;
    client_max_body_size 0;
{{- if .KeepConn}}

    upstream fcgi_backend {
        server {{.FastCGIPass}};
        keepalive 8;
    }
{{- end}}

    server {
        listen 127.0.0.1:{{.Port}};
        server_name localhost;
        root {{.DocRoot}};
{{.ExtraServer}}

        location ~ [^/]\.php(/|$) {
            fastcgi_split_path_info ^(.+?\.php)(/.*)$;
{{- if .KeepConn}}
            fastcgi_pass fcgi_backend;
            fastcgi_keep_conn on;
{{- else}}
            fastcgi_pass {{.FastCGIPass}};
{{- end}}
{{- if .ReadTimeoutMS}}
            fastcgi_read_timeout {{.ReadTimeoutMS}}ms;
{{- end}}

            fastcgi_param QUERY_STRING      $query_string;
            fastcgi_param REQUEST_METHOD    $request_method;
            fastcgi_param CONTENT_TYPE      $content_type;
            fastcgi_param CONTENT_LENGTH    $content_length;
            fastcgi_param SCRIPT_NAME       $fastcgi_script_name;
            fastcgi_param REQUEST_URI       $request_uri;
            fastcgi_param DOCUMENT_URI      $document_uri;
            fastcgi_param DOCUMENT_ROOT     $document_root;
            fastcgi_param SERVER_PROTOCOL   $server_protocol;
            fastcgi_param REQUEST_SCHEME    $scheme;
            fastcgi_param HTTPS             $https if_not_empty;
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
            fastcgi_param SERVER_SOFTWARE   nginx/$nginx_version;
            fastcgi_param REMOTE_ADDR       $remote_addr;
            fastcgi_param REMOTE_PORT       $remote_port;
            fastcgi_param SERVER_ADDR       $server_addr;
            fastcgi_param SERVER_PORT       $server_port;
            fastcgi_param SERVER_NAME       $server_name;
            fastcgi_param REDIRECT_STATUS   200;
            fastcgi_param SCRIPT_FILENAME   $document_root$fastcgi_script_name;
            fastcgi_param PATH_INFO         $fastcgi_path_info;
            fastcgi_param REQUEST_ID        $request_id;
{{.ExtraLocation}}
        }
    }
}
`))

// nginxTemplateData is the input of nginxTemplate.
type nginxTemplateData struct {
	NginxConfig
	Dir, ErrorLog, AccessLog, DocRoot string
	Root                              bool
	Port                              int
	ReadTimeoutMS                     int64
}

// StartNginx starts nginx in front of cfg.FastCGIPass with a generated
// nginx.conf on a free 127.0.0.1 port, waits until the port accepts a
// connection, and stops it in t.Cleanup. The config is checked with `nginx -t`
// first so that a bad ExtraServer or ExtraLocation fails with nginx's own
// message. It skips the test when nginx is not installed (see RequireNginx).
func StartNginx(t testing.TB, cfg NginxConfig) *Nginx {
	t.Helper()
	bin := RequireNginx(t)
	if cfg.FastCGIPass == "" {
		t.Fatalf("testbed: NginxConfig.FastCGIPass is required")
	}
	if _, _, err := parseNginxAddr(cfg.FastCGIPass); err != nil {
		t.Fatalf("testbed: NginxConfig.FastCGIPass: %v", err)
	}
	docRoot := cfg.Root
	if docRoot == "" {
		docRoot = PHPRoot(t)
	}
	docRoot, err := filepath.Abs(docRoot)
	if err != nil {
		t.Fatalf("testbed: NginxConfig.Root: %v", err)
	}
	dir := ShortTempDir(t)
	port := FreePort(t)
	n := &Nginx{
		URL:       "http://127.0.0.1:" + strconv.Itoa(port),
		ErrorLog:  filepath.Join(dir, "error.log"),
		AccessLog: filepath.Join(dir, "access.log"),
		Dir:       dir,
	}
	conf := filepath.Join(dir, "nginx.conf")
	n.ConfigPath = conf
	n.bin = bin
	data := nginxTemplateData{
		NginxConfig:   cfg,
		Dir:           dir,
		ErrorLog:      n.ErrorLog,
		AccessLog:     n.AccessLog,
		DocRoot:       docRoot,
		Root:          os.Geteuid() == 0,
		Port:          port,
		ReadTimeoutMS: cfg.ReadTimeout.Milliseconds(),
	}
	if cfg.ReadTimeout > 0 && data.ReadTimeoutMS == 0 {
		data.ReadTimeoutMS = 1 // Sub-millisecond would otherwise mean "default".
	}
	if err := writeTemplate(conf, nginxTemplate, data); err != nil {
		t.Fatalf("testbed: %v", err)
	}

	n.check(t)

	out, err := openLog(filepath.Join(dir, "nginx.out"))
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	defer out.Close() // The child has its own copy.
	cmd := exec.Command(bin, n.args()...)
	cmd.Env = child.Env(nil)
	cmd.Stdout, cmd.Stderr = out, out // Stdin stays nil, i.e. /dev/null.
	// SIGTERM is nginx's fast shutdown, which also stops the workers.
	n.proc, err = child.Start(cmd, syscall.SIGTERM)
	if err != nil {
		t.Fatalf("testbed: nginx: %v", err)
	}
	n.Pid = cmd.Process.Pid
	t.Cleanup(func() {
		n.Stop()
		if t.Failed() {
			t.Logf("testbed: nginx error log %s:\n%s", n.ErrorLog, tail(n.ReadErrorLog(), 40))
		}
	})

	if err := n.proc.WaitReady("tcp", fmt.Sprintf("127.0.0.1:%d", port), readyTimeout); err != nil {
		t.Fatalf("testbed: nginx (%s) not ready: %v\nerror log tail:\n%s\noutput:\n%s",
			conf, err, tail(n.ReadErrorLog(), 30), tail(readFileString(out.Name()), 30))
	}
	t.Logf("testbed: nginx pid %d serving %s -> %s (dir %s)", n.Pid, n.URL, cfg.FastCGIPass, dir)
	return n
}

// args are the command-line arguments nginx runs with: -p keeps relative
// paths inside Dir and -e redirects the log nginx writes before it has read
// error_log from the config (on most builds /var/log/nginx/error.log, which
// non-root users cannot open).
func (n *Nginx) args() []string {
	return []string{"-p", n.Dir + "/", "-e", n.ErrorLog, "-c", n.ConfigPath}
}

// check runs nginx -t on the config, so that a bad one fails the test with
// nginx's own message.
func (n *Nginx) check(t testing.TB) {
	t.Helper()
	check := exec.Command(n.bin, append([]string{"-t", "-q"}, n.args()...)...)
	check.Env = child.Env(nil)
	if output, err := check.CombinedOutput(); err != nil {
		t.Fatalf("testbed: nginx -t rejected %s: %v\n%s\nconfig:\n%s", n.ConfigPath, err, output, readFileString(n.ConfigPath))
	}
}

// Reload rewrites nginx.conf with edit, checks it with nginx -t and has
// nginx reload it (SIGHUP), as an operator's `nginx -s reload` does. It
// returns once nginx has started the new configuration's worker.
func (n *Nginx) Reload(t testing.TB, edit func(conf string) string) {
	t.Helper()
	old := readFileString(n.ConfigPath)
	conf := edit(old)
	if conf == old {
		t.Fatalf("testbed: Nginx.Reload: the edit changed nothing in %s", n.ConfigPath)
	}
	if err := os.WriteFile(n.ConfigPath, []byte(conf), 0o644); err != nil {
		t.Fatalf("testbed: %v", err)
	}
	n.check(t)
	before := strings.Count(n.ReadErrorLog(), "start worker process")
	if err := n.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("testbed: reloading nginx: %v", err)
	}
	deadline := time.Now().Add(readyTimeout)
	for strings.Count(n.ReadErrorLog(), "start worker process") <= before {
		if time.Now().After(deadline) {
			t.Fatalf("testbed: nginx did not start a worker with the new configuration within %v\n%s", readyTimeout, tail(n.ReadErrorLog(), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("testbed: nginx reloaded %s", n.ConfigPath)
}

// Stop stops nginx and waits for it: SIGQUIT (graceful), then after 5 s
// SIGKILL of the master and of its workers. It is idempotent and safe to call
// concurrently.
func (n *Nginx) Stop() {
	n.stopOnce.Do(func() {
		n.proc.Stop(child.Step{Signal: syscall.SIGQUIT, Wait: 5 * time.Second})
	})
}

// ReadErrorLog returns the current contents of the error log, or "" if it
// does not exist yet.
func (n *Nginx) ReadErrorLog() string {
	return readFileString(n.ErrorLog)
}

// ReadAccessLog returns the current contents of the access log, or "" if it
// does not exist yet. nginx writes a line when a request completes, so a test
// may have to poll briefly after reading the response.
func (n *Nginx) ReadAccessLog() string {
	return readFileString(n.AccessLog)
}
