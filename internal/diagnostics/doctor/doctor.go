// Package doctor finds broken nginx and php-fpm setups before traffic does.
//
// It reads nginx's configuration (the output of `nginx -T`, or the files
// themselves, parsed with crossplane) and php-fpm's (with package fpm), and
// checks them against each other and against what really listens on this
// host: that every fastcgi_pass reaches a php-fpm pool, that nginx's user
// may open the pool's socket, that the timeouts fire in an order that
// leaves the client a useful answer, that PHP locations send
// SCRIPT_FILENAME, that php-fpm accepts its own configuration and runs.
// Each finding names the file and line on both sides, what happens at run
// time if it is left, and the exact change that fixes it.
//
// Live probes use the sidecar's cause ids (upstream_refused,
// upstream_socket_missing, ...), worked out by diagnostics.Classifier, so
// that what doctor says before the first request matches what the sidecar
// says about a failed one.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/hostprobe"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/nginxconf"
)

// Severity is how urgent a finding is.
type Severity string

// The severities, most urgent first. Only errors make the doctor fail.
const (
	// SeverityError is something that breaks requests now or at the
	// next restart.
	SeverityError Severity = "error"
	// SeverityWarning breaks requests under some conditions (load, slow
	// scripts) or hides why they fail.
	SeverityWarning Severity = "warning"
	// SeverityInfo is worth knowing; nothing fails because of it.
	SeverityInfo Severity = "info"
)

func (s Severity) rank() int {
	switch s {
	case SeverityError:
		return 0
	case SeverityWarning:
		return 1
	}
	return 2
}

// Location is a directive in a configuration file.
type Location struct {
	File string `json:"file"`
	Line int    `json:"line,omitempty"`
	// Text is the directive as written, or as it is in effect when the
	// file does not set it (then Line is 0).
	Text string `json:"text,omitempty"`
}

// String returns "file:line", which editors and terminals can open.
func (l *Location) String() string {
	if l == nil || l.File == "" {
		return ""
	}
	if l.Line == 0 {
		return l.File
	}
	return fmt.Sprintf("%s:%d", l.File, l.Line)
}

// Finding is one problem, or one fact worth knowing.
type Finding struct {
	// ID is stable, for scripts and CI: fastcgi_pass_unreachable,
	// socket_permission, timeout_order, ...
	ID       string   `json:"id"`
	Severity Severity `json:"severity"`
	// Title says what is wrong in one line.
	Title string `json:"title"`
	// Detail gives the facts the finding rests on, with the numbers.
	Detail string `json:"detail,omitempty"`
	// Nginx and FPM are the directives involved on each side.
	Nginx []*Location `json:"nginx,omitempty"`
	FPM   []*Location `json:"fpm,omitempty"`
	// K8s are the places in a Kubernetes manifest involved (Doctor.K8s).
	K8s []*Location `json:"k8s,omitempty"`
	// Impact is what happens at run time if the finding is left.
	Impact string `json:"impact,omitempty"`
	// Fix is the exact change that resolves it.
	Fix string `json:"fix,omitempty"`
	// Cause is the sidecar's cause id, for what a live probe saw.
	Cause string `json:"cause,omitempty"`
}

// Probe is the result of reaching one FastCGI address live.
type Probe struct {
	// Addr is in fastcgi_pass syntax.
	Addr string `json:"addr"`
	// Pool names the php-fpm pool configured to listen there.
	Pool string `json:"pool,omitempty"`
	// Via lists the nginx directives that send requests there.
	Via []string `json:"via,omitempty"`
	OK  bool     `json:"ok"`
	// LatencyMS is the round trip of the GET_VALUES probe.
	LatencyMS float64 `json:"latency_ms,omitempty"`
	// Relays is set when fcgiscope answered there: the address it relays
	// to, probed in turn.
	Relays string `json:"relays,omitempty"`
	// Ping is the ping.path request, when the pool has one.
	Ping       string  `json:"ping,omitempty"`
	PingMS     float64 `json:"ping_ms,omitempty"`
	PingResult string  `json:"ping_result,omitempty"`
	// Cause and Error say why the address could not be used.
	Cause string `json:"cause,omitempty"`
	Error string `json:"error,omitempty"`

	err    error
	values map[string]string // the GET_VALUES_RESULT
	relay  fcgi.Addr
}

// Report is what Check found.
type Report struct {
	// Nginx and FPM say which configuration was read, and how.
	Nginx      string    `json:"nginx,omitempty"`
	NginxFiles []string  `json:"nginx_files,omitempty"`
	FPM        string    `json:"fpm,omitempty"`
	FPMFiles   []string  `json:"fpm_files,omitempty"`
	Findings   []Finding `json:"findings"`
	Probes     []Probe   `json:"probes"`
	// NotChecked lists what could not be checked, and why, so that a
	// clean report is not mistaken for a clean bill of health.
	NotChecked []string `json:"not_checked"`
}

// Errors counts the findings of severity error.
func (r *Report) Errors() int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == SeverityError {
			n++
		}
	}
	return n
}

// FPMMaster is a running php-fpm master process.
type FPMMaster struct {
	Pid int
	// Config is the main configuration file it was started with,
	// absolute.
	Config string
}

// Doctor checks one nginx + php-fpm setup. The zero value checks this
// host: the nginx configuration `nginx -T` prints, and the php-fpm
// configuration fpm.Discover finds. The hooks exist so that tests can run
// the checks on fixtures without the host's processes and sockets.
type Doctor struct {
	// NginxConf is the nginx.conf to read. Empty means the output of
	// `nginx -T` when nginx is installed, else /etc/nginx/nginx.conf.
	NginxConf string
	// FPMConf is php-fpm's main configuration file. Empty means the first
	// one fpm.Discover finds.
	FPMConf string
	// Root, when set, stands in for "/" when configuration files are read,
	// for checking a container image's files or a fixture. php-fpm -t and
	// the process list are not consulted then: they would see this host.
	Root string
	// Upstream, when set, is the one FastCGI address checked; nginx's
	// configuration is then read only when NginxConf names it.
	Upstream fcgi.Addr
	// ProbeScript is the path of a script that must exist, such as
	// /index.php. Each PHP location is then asked for it with the params
	// nginx would send, and php-fpm's answer is checked.
	ProbeScript string
	// Timeout bounds each live probe; 0 means 2 seconds.
	Timeout time.Duration
	// K8s, when set, lists Kubernetes manifests (files, or directories of
	// .yaml, .yml and .json files) whose pods are checked: their sockets,
	// users, probes, shutdown and memory, with the php-fpm and nginx
	// configuration of their ConfigMaps. This host's nginx and php-fpm
	// are then checked only when NginxConf, FPMConf or Upstream is set.
	K8s []string

	// Command runs a program and returns its standard output and error;
	// nil runs it for real. It runs nginx -T and php-fpm -t.
	Command func(ctx context.Context, name string, args ...string) (stdout, stderr []byte, err error)
	// LookPath finds a program; nil means exec.LookPath, then /usr/sbin.
	LookPath func(name string) (string, error)
	// Probe reaches one address live: it connects and asks for
	// GET_VALUES. Failures to connect are *outcome.DialError. nil means the
	// real probe (hostprobe's).
	Probe func(ctx context.Context, addr fcgi.Addr) (hostprobe.Responder, error)
	// Responders lists the FastCGI servers answering on this host, for
	// "php-fpm answers there instead"; nil scans the host.
	Responders func(ctx context.Context) []hostprobe.Responder
	// Masters lists the running php-fpm master processes; nil reads /proc.
	Masters func() ([]FPMMaster, error)
}

// ErrNothingToCheck is returned by Check when neither configuration could be
// read and no upstream was given: nothing was checked.
var ErrNothingToCheck = errors.New("found neither an nginx nor a php-fpm configuration to check")

// ConfigError is returned by Check when a configuration file it was told
// to read (Doctor.NginxConf or Doctor.FPMConf) cannot be read: a report
// without it would pass for a clean bill of health.
type ConfigError struct {
	// Server is "nginx", "php-fpm" or "k8s".
	Server string
	Path   string
	Err    error
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("%s configuration %s: %v", e.Server, e.Path, e.Err)
}

func (e *ConfigError) Unwrap() error { return e.Err }

// Check runs every check and returns the report. It fails when a
// configuration it was given cannot be read (*ConfigError), or when it
// could check nothing at all; everything else it could not check is listed
// in Report.NotChecked.
func (d *Doctor) Check(ctx context.Context) (*Report, error) {
	c := &checkup{d: d, report: &Report{Findings: []Finding{}, Probes: []Probe{}, NotChecked: []string{}}}
	for _, given := range []struct{ server, path string }{{"nginx", d.NginxConf}, {"php-fpm", d.FPMConf}} {
		if given.path == "" {
			continue
		}
		path := nginxconf.RootFS(d.Root).Path(given.path)
		fi, err := os.Stat(path)
		if err == nil && fi.IsDir() {
			err = fmt.Errorf("is a directory, not the main configuration file")
		}
		if err != nil {
			return c.report, &ConfigError{Server: given.server, Path: path, Err: err}
		}
	}
	if len(d.K8s) > 0 {
		if err := c.checkK8s(); err != nil || (d.NginxConf == "" && d.FPMConf == "" && d.Upstream.IsZero()) {
			c.finish()
			return c.report, err
		}
	}
	c.loadNginx(ctx)
	c.loadFPM()
	if c.ngx == nil && c.fpm == nil && d.Upstream.IsZero() {
		return c.report, fmt.Errorf("%w: %s", ErrNothingToCheck, strings.Join(c.report.NotChecked, "; "))
	}
	c.collectTargets()
	c.probeAll(ctx)
	c.checkTargets(ctx)
	c.checkPermissions()
	c.checkFPMProcess(ctx)
	c.checkScriptFilename()
	c.checkTimeouts()
	c.checkKeepalive()
	c.checkCapacity()
	c.checkMaxChildrenLog()
	c.checkObservability()
	c.checkDiskSpace()
	c.pingPools(ctx)
	c.probeScripts(ctx)
	c.finish()
	return c.report, nil
}

func (d *Doctor) timeout() time.Duration {
	if d.Timeout > 0 {
		return d.Timeout
	}
	return 2 * time.Second
}

func (d *Doctor) command(ctx context.Context, name string, args ...string) ([]byte, []byte, error) {
	if d.Command != nil {
		return d.Command(ctx, name, args...)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return []byte(stdout.String()), []byte(stderr.String()), err
}

// lookPath finds a program on PATH and then in the sbin directories, which
// are often missing from PATH but are where Debian installs nginx and
// php-fpm.
func (d *Doctor) lookPath(name string) (string, error) {
	if d.LookPath != nil {
		return d.LookPath(name)
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, exec.ErrNotFound)
}

// checkup is one run of the checks.
type checkup struct {
	d      *Doctor
	report *Report

	ngx *nginxconf.Config
	fpm *fpm.Config
	ini *phpIni

	targets []*target
	probes  map[fcgi.Addr]*Probe
	// covered marks the pools whose not-running state a target finding
	// already reported.
	covered map[*fpm.Pool]bool
	masters []FPMMaster
	// mastersErr is why the process list could not be read.
	mastersErr  error
	mastersRead bool

	responders     []hostprobe.Responder
	respondersRead bool

	fpmBin    string
	fpmBinErr error
}

// target is one address nginx sends FastCGI requests to.
type target struct {
	addr fcgi.Addr
	// refs are the directives that name it: fastcgi_pass lines and
	// upstream server lines.
	refs   []*nginxconf.Directive
	passes []*nginxconf.Pass
	// upstream is the block it is a server of, if any.
	upstream *nginxconf.Upstream
	pool     *fpm.Pool
	// via is the fcgiscope that relays nginx's requests here, when the
	// target was found by following one.
	via *target
}

func (c *checkup) add(f Finding) {
	c.report.Findings = append(c.report.Findings, f)
}

func (c *checkup) notChecked(format string, args ...any) {
	c.report.NotChecked = append(c.report.NotChecked, fmt.Sprintf(format, args...))
}

func (c *checkup) finish() {
	slices.SortStableFunc(c.report.Findings, func(a, b Finding) int {
		return a.Severity.rank() - b.Severity.rank()
	})
}

// locOf quotes an nginx directive as a finding's Location; nil stays nil.
func locOf(d *nginxconf.Directive) *Location {
	if d == nil {
		return nil
	}
	return &Location{File: d.File, Line: d.Line, Text: d.Text()}
}
