package benchmarks

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fcgiscope/fcgiscope/internal/child"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// settings read from the environment, so that `make bench` can be tuned
// without editing code.
var (
	rounds   = envInt("BENCH_ROUNDS", 3)
	duration = envDuration("BENCH_DURATION", 5*time.Second)
	conns    = envInt("BENCH_CONNS", 16)
	// only, when set, is a regular expression a configuration's transport
	// and keep-alive (such as "unix keep_conn=false") must match.
	only = regexp.MustCompile(os.Getenv("BENCH_ONLY"))
	// scripts are the PHP scripts TestNginxLoadRatios measures, each
	// through every configuration: hello.php shows the relay's cost per
	// request at its largest share, work.php (about 2 ms of PHP) the share
	// it has when php-fpm is the bottleneck, as it is in production, and
	// page.php the cost of a page sent in many records.
	scripts = envList("BENCH_SCRIPTS", "hello.php,work.php,page.php")
	// baselineBin, when set, names another fcgiscope binary (a release, an
	// earlier commit) to measure next to this checkout's.
	baselineBin = os.Getenv("BENCH_BASELINE_BIN")
	// baselineEnv adds settings (space-separated NAME=value) to the
	// baseline row, as in BENCH_BASELINE_ENV=GOMAXPROCS=2 with
	// BENCH_BASELINE_BIN naming the same build.
	baselineEnv = strings.Fields(os.Getenv("BENCH_BASELINE_ENV"))
)

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

func envFloat(name string, def float64) float64 {
	if f, err := strconv.ParseFloat(os.Getenv(name), 64); err == nil && f > 0 {
		return f
	}
	return def
}

// envList splits a comma-separated list, dropping empty items.
func envList(name, def string) []string {
	v := os.Getenv(name)
	if strings.TrimSpace(v) == "" {
		v = def
	}
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// wrkResult is what one wrk run measured.
type wrkResult struct {
	RPS      float64 `json:"rps"`
	P50, P99 float64 // milliseconds
	Errors   int     `json:"errors"`
	Requests int     `json:"requests"`
	// CPU is the CPU time per request, in microseconds, of nginx,
	// php-fpm and the relay, each with its children.
	CPU map[string]float64 `json:"cpu_us_per_request,omitempty"`
}

var (
	reRPS      = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	reReqs     = regexp.MustCompile(`(\d+) requests in`)
	reNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	reSockErr  = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	rePercent  = regexp.MustCompile(`^\s+(50|99)%\s+([\d.]+)(us|ms|s)`)
	unitFactor = map[string]float64{"us": 0.001, "ms": 1, "s": 1000}
)

// runWrk loads url with wrk and parses its report.
func runWrk(t *testing.T, url string) wrkResult {
	t.Helper()
	// wrk wants at least one connection per thread.
	cmd := exec.Command("wrk", fmt.Sprintf("-t%d", min(2, conns)), fmt.Sprintf("-c%d", conns), "-d"+duration.String(), "--latency", url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("wrk: %v\n%s", err, out)
	}
	var r wrkResult
	text := string(out)
	if m := reRPS.FindStringSubmatch(text); m != nil {
		r.RPS, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := reReqs.FindStringSubmatch(text); m != nil {
		r.Requests, _ = strconv.Atoi(m[1])
	}
	if m := reNon2xx.FindStringSubmatch(text); m != nil {
		n, _ := strconv.Atoi(m[1])
		r.Errors += n
	}
	if m := reSockErr.FindStringSubmatch(text); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.Atoi(s)
			r.Errors += n
		}
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		if m := rePercent.FindStringSubmatch(sc.Text()); m != nil {
			v, _ := strconv.ParseFloat(m[2], 64)
			v *= unitFactor[m[3]]
			if m[1] == "50" {
				r.P50 = v
			} else {
				r.P99 = v
			}
		}
	}
	if r.RPS == 0 {
		t.Fatalf("could not read wrk's report:\n%s", text)
	}
	return r
}

// bodyPrefix is how each script's response body begins. wrk counts any
// 2xx or 3xx answer as a success, so the suite asks once through every
// configuration before measuring it and fails when the body is not the
// script's: a misrouted request or a wrong document root would otherwise be
// measured as fast PHP.
var bodyPrefix = map[string]string{
	"hello.php": "hello from php",
	"work.php":  "work done",
	"page.php":  "<!doctype html>",
}

// checkResponse fetches url once and fails the test unless the answer is
// 200 with the script's body prefix, when bodyPrefix knows it. It also
// warms the path up: php-fpm's opcache and every connection pool on the
// way see one request before the measurement starts.
func checkResponse(t *testing.T, url, script string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	if want, ok := bodyPrefix[script]; resp.StatusCode != http.StatusOK || ok && !strings.HasPrefix(string(body), want) {
		t.Fatalf("GET %s = %d %.200q, want 200 beginning with %q", url, resp.StatusCode, body, bodyPrefix[script])
	}
}

// buildBareRelay builds the bare relay fixture (./benchmarks/barerelay)
// into a temporary directory of t and returns the executable's path. It is
// built by the test rather than shipped, so that it always matches the Go
// toolchain the suite runs with; the build cache makes the second build in
// a run nearly free.
func buildBareRelay(t *testing.T) string {
	t.Helper()
	// `go test` puts the toolchain that built the test first in PATH.
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		t.Fatalf("finding the module root with go env GOMOD: %q, %v", gomod, err)
	}
	bin := filepath.Join(t.TempDir(), "barerelay")
	cmd := exec.Command("go", "build", "-o", bin, "./benchmarks/barerelay")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the bare relay: %v\n%s", err, out)
	}
	return bin
}

// startBareRelay runs the bare relay from listen to upstream (both in
// nginx's syntax), waits until it accepts connections, stops it in
// t.Cleanup and returns its pid.
//
// It runs with GOMAXPROCS=1, and that is the suite's only bare relay
// configuration. fcgiscope sets its own GOMAXPROCS to max(1, NumCPU/4)
// unless GOMAXPROCS is set, which is 1 on machines with fewer than 8 CPUs;
// left to the Go default the bare relay would run on every CPU, and the
// comparison of the two would partly measure how the Go runtime spreads
// one process's work over threads rather than what each relay does. On
// larger machines fcgiscope runs on more threads than this.
func startBareRelay(t *testing.T, bin, listen, upstream string) int {
	t.Helper()
	network, address := "tcp", listen
	if p, ok := strings.CutPrefix(listen, "unix:"); ok {
		network, address = "unix", p
	}
	logPath := filepath.Join(t.TempDir(), "barerelay.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close() // The child has its own copy.
	cmd := exec.Command(bin, "-listen", listen, "-upstream", upstream)
	cmd.Env = append(child.Env(nil), "GOMAXPROCS=1")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	proc, err := child.Start(cmd, syscall.SIGTERM)
	if err != nil {
		t.Fatalf("bare relay: %v", err)
	}
	t.Cleanup(func() {
		// A relay that ignores SIGTERM or exits with an error is a
		// broken fixture, and its numbers are suspect too.
		killed, _ := proc.Stop(child.Step{Signal: syscall.SIGTERM, Wait: 5 * time.Second})
		if killed || proc.Err() != nil {
			out, _ := os.ReadFile(logPath)
			t.Errorf("bare relay on %s did not exit cleanly on SIGTERM (killed: %v, exit: %v)\n%s", listen, killed, proc.Err(), out)
		}
	})
	if err := proc.WaitReady(network, address, 10*time.Second); err != nil {
		out, _ := os.ReadFile(logPath)
		t.Fatalf("bare relay not ready: %v\n%s", err, out)
	}
	t.Logf("bare relay pid %d relaying %s -> %s", cmd.Process.Pid, listen, upstream)
	return cmd.Process.Pid
}

// keepAliveSettle is how long to wait after measuring through an fcgiscope
// that may keep php-fpm connections open (FCGISCOPE_UPSTREAM_KEEPALIVE):
// each kept connection holds one of php-fpm's few workers until
// FCGISCOPE_UPSTREAM_KEEPALIVE_TIMEOUT (1 s by default) closes it, and the
// next configuration would start its measurement with fewer workers.
const keepAliveSettle = 1500 * time.Millisecond

// relayConfig is one way for nginx to reach php-fpm: directly, through the
// bare relay, or through an fcgiscope.
type relayConfig struct {
	name string
	pass string // nginx's fastcgi_pass
	pid  int    // the relay's pid; 0 for direct
	// settle is how long to wait after a measurement through it; see
	// keepAliveSettle.
	settle time.Duration
}

// startRelays starts every relay TestNginxLoadRatios and
// TestOpenLoopLatency compare in front of fpm, listening on addresses that
// addr makes from a name, and returns them with direct first. names, when
// not nil, limits them to those named.
func startRelays(t *testing.T, fpm *testbed.FPM, bareBin string, addr func(name string) string, names map[string]bool) []relayConfig {
	t.Helper()
	want := func(name string) bool { return names == nil || names[name] }
	// fcgiscopeEnv is what every fcgiscope configuration is started with:
	// its defaults, apart from where it listens and what it relays to.
	fcgiscopeEnv := func(listen string, extra ...string) []string {
		return append([]string{"FCGISCOPE_LISTEN=" + listen, "FCGISCOPE_LISTEN_MODE=0666", "FCGISCOPE_UPSTREAM=" + fpm.Addr,
			"FCGISCOPE_FPM_CONFIG=" + fpm.ConfigPath, "FCGISCOPE_LOG_LEVEL=warn"}, extra...)
	}
	relays := []relayConfig{{name: "direct", pass: fpm.Addr}}
	if want("bare-relay") {
		a := addr("bare")
		relays = append(relays, relayConfig{name: "bare-relay", pass: a, pid: startBareRelay(t, bareBin, a, fpm.Addr)})
	}
	// fcgiscope as it ships, whatever its defaults are at this commit.
	if want("fcgiscope") {
		a := addr("fcgiscope")
		p := testbed.StartFcgiscope(t, fcgiscopeEnv(a)...)
		relays = append(relays, relayConfig{name: "fcgiscope", pass: a, pid: p.Pid, settle: keepAliveSettle})
	}
	// A new php-fpm connection for every request, as nginx without
	// fastcgi_keep_conn opens one.
	if want("fcgiscope-ka0") {
		a := addr("ka0")
		p := testbed.StartFcgiscope(t, fcgiscopeEnv(a, "FCGISCOPE_UPSTREAM_KEEPALIVE=0")...)
		relays = append(relays, relayConfig{name: "fcgiscope-ka0", pass: a, pid: p.Pid})
	}
	// Kept php-fpm connections, one fewer than the pool has workers, so
	// that a worker stays free for requests that cannot use one.
	if want("fcgiscope-ka3") {
		a := addr("ka3")
		p := testbed.StartFcgiscope(t, fcgiscopeEnv(a, "FCGISCOPE_UPSTREAM_KEEPALIVE=3")...)
		relays = append(relays, relayConfig{name: "fcgiscope-ka3", pass: a, pid: p.Pid, settle: keepAliveSettle})
	}
	// Another build with the same settings as the fcgiscope row, to tell
	// a change's effect from the machine's mood.
	if want("baseline") && baselineBin != "" {
		a := addr("baseline")
		p := testbed.StartFcgiscopeBinary(t, baselineBin, fcgiscopeEnv(a, baselineEnv...)...)
		relays = append(relays, relayConfig{name: "baseline", pass: a, pid: p.Pid, settle: keepAliveSettle})
	}
	return relays
}

type sample struct {
	Config string    `json:"config"`
	Round  int       `json:"round"`
	Result wrkResult `json:"result"`
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func spread(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	lo, hi := xs[0], xs[0]
	for _, x := range xs {
		lo, hi = min(lo, x), max(hi, x)
	}
	m := median(xs)
	if m == 0 {
		return 0
	}
	return (hi - lo) / 2 / m * 100
}

// cell right-aligns s in width columns. fmt pads to a number of bytes, and
// the headers' ± and µ take two bytes for one column.
func cell(s string, width int) string {
	return strings.Repeat(" ", max(0, width-utf8.RuneCountInString(s))) + s
}

// TestNginxLoadRatios measures each script of BENCH_SCRIPTS through nginx
// with php-fpm reached directly, through the bare relay and through
// fcgiscope in several settings, over unix sockets and TCP, with
// fastcgi_keep_conn off and on, alternating the configurations in every
// round. Besides throughput and latency it reports the CPU time each hop
// spends per request, and the relay's next to the bare relay's: what
// fcgiscope costs beyond what any process between nginx and php-fpm costs.
func TestNginxLoadRatios(t *testing.T) {
	if os.Getenv("FCGISCOPE_BENCH") != "1" {
		t.Skip("benchmarks run with make bench (FCGISCOPE_BENCH=1)")
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Fatalf("wrk is needed: apt-get install wrk")
	}
	root := testbed.PHPRoot(t)
	bareBin := buildBareRelay(t)
	// One php-fpm and one of each relay per transport, kept for the whole
	// run; nginx is started for each measurement and stopped after it,
	// because nginx's idle keep-alive connections pin php-fpm workers and
	// would starve the next configuration.
	type target struct {
		name                     string
		script, relay, transport string
		keep                     bool
		pass                     string
		settle                   time.Duration
		pids                     map[string]int // the processes whose CPU time is measured
	}
	nameOf := func(script, relay, transport string, keep bool) string {
		return fmt.Sprintf("%s %s %s keep_conn=%v", script, relay, transport, keep)
	}
	var targets []target
	for _, transport := range []string{"unix", "tcp"} {
		var keeps []bool
		for _, keep := range []bool{false, true} {
			if only.MatchString(fmt.Sprintf("%s keep_conn=%v", transport, keep)) {
				keeps = append(keeps, keep)
			}
		}
		if len(keeps) == 0 {
			continue // nothing of this transport is measured: start nothing for it
		}
		fpmCfg := testbed.FPMConfig{MaxChildren: 4}
		if transport == "tcp" {
			fpmCfg.Listen = fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
		}
		fpm := testbed.StartFPM(t, fpmCfg)
		addr := func(name string) string {
			if transport == "unix" {
				return "unix:" + filepath.Join(testbed.ShortTempDir(t), name+".sock")
			}
			return fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
		}
		relays := startRelays(t, fpm, bareBin, addr, nil)
		for _, keep := range keeps {
			for _, script := range scripts {
				for _, r := range relays {
					pids := map[string]int{"php-fpm": fpm.Pid}
					if r.pid != 0 {
						pids["relay"] = r.pid
					}
					targets = append(targets, target{nameOf(script, r.name, transport, keep), script, r.name, transport, keep, r.pass, r.settle, pids})
				}
			}
		}
	}
	if len(targets) == 0 {
		t.Skipf("BENCH_ONLY=%q matches no transport and keep_conn", only)
	}

	var samples []sample
	for round := range rounds {
		for _, tg := range targets {
			ngx := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: tg.pass, Root: root, KeepConn: tg.keep})
			url := ngx.URL + "/" + tg.script
			checkResponse(t, url, tg.script)
			tg.pids["nginx"] = ngx.Pid
			cpu := newCPUMeter(tg.pids)
			r := runWrk(t, url)
			r.CPU = cpu.perRequest(r.Requests)
			ngx.Stop()
			waitIdle(t, tg.pids["php-fpm"], tg.pids["relay"])
			time.Sleep(tg.settle)
			samples = append(samples, sample{tg.name, round, r})
			t.Logf("round %d %-46s %8.0f req/s p50 %.2f ms p99 %.2f ms errors %d cpu µs/request %v", round, tg.name, r.RPS, r.P50, r.P99, r.Errors, r.CPU)
		}
	}

	type series struct {
		rps, p50, p99, relayCPU, fpmCPU, nginxCPU []float64
		errs                                      int
	}
	by := func(name string) series {
		var x series
		for _, s := range samples {
			if s.Config == name {
				x.rps = append(x.rps, s.Result.RPS)
				x.p50 = append(x.p50, s.Result.P50)
				x.p99 = append(x.p99, s.Result.P99)
				x.relayCPU = append(x.relayCPU, s.Result.CPU["relay"])
				x.fpmCPU = append(x.fpmCPU, s.Result.CPU["php-fpm"])
				x.nginxCPU = append(x.nginxCPU, s.Result.CPU["nginx"])
				x.errs += s.Result.Errors
			}
		}
		return x
	}
	width := len("configuration")
	for _, tg := range targets {
		width = max(width, len(tg.name))
	}
	var table []string
	table = append(table, fmt.Sprintf("%-*s %8s %s %7s %8s %6s %10s %6s %6s %7s %6s %10s", width, "configuration", "req/s", cell("±%", 6), "p50 ms", "p99 ms", "ratio", "added p50", "errors",
		"relay", "php-fpm", "nginx", "relay/bare"))
	for _, tg := range targets {
		x := by(tg.name)
		// Ratios compare with the same script, transport and
		// keep_conn: only the path between nginx and php-fpm differs.
		base := by(nameOf(tg.script, "direct", tg.transport, tg.keep))
		relay, perBare := "-", "-"
		if tg.relay != "direct" {
			relay = fmt.Sprintf("%.0f", median(x.relayCPU))
			// The bare relay moves the same bytes over the same
			// sockets, so this is fcgiscope's CPU per request as a
			// multiple of the least any relay spends.
			if bare := median(by(nameOf(tg.script, "bare-relay", tg.transport, tg.keep)).relayCPU); bare > 0 {
				perBare = fmt.Sprintf("%.2fx", median(x.relayCPU)/bare)
			}
		}
		table = append(table, fmt.Sprintf("%-*s %8.0f %5.1f%% %7.3f %8.3f %5.2fx %+7.3f ms %6d %6s %7.0f %6.0f %10s",
			width, tg.name, median(x.rps), spread(x.rps), median(x.p50), median(x.p99), median(x.rps)/median(base.rps), median(x.p50)-median(base.p50), x.errs,
			relay, median(x.fpmCPU), median(x.nginxCPU), perBare))
	}
	report := fmt.Sprintf("nginx + %s, wrk -t%d -c%d -d%s, php-fpm pm.max_children 4, median of %d alternating rounds; ratio = throughput / direct's "+
		"(same script, transport, keep_conn); relay, php-fpm, nginx = CPU µs per request of each, children included; "+
		"relay/bare = the relay's CPU per request / the bare relay's\n%s",
		strings.Join(scripts, ", "), min(2, conns), conns, duration, rounds, strings.Join(table, "\n"))
	fmt.Println("\n" + report)
	writeResults(t, "nginx", samples, report)
}

// writeResults keeps the raw numbers under bench-results/.
func writeResults(t *testing.T, name string, samples any, report string) {
	dir := filepath.Join("..", "bench-results")
	os.MkdirAll(dir, 0o755)
	stamp := time.Now().Format("20060102-150405")
	raw, _ := json.MarshalIndent(samples, "", "  ")
	os.WriteFile(filepath.Join(dir, name+"-"+stamp+".json"), raw, 0o644)
	os.WriteFile(filepath.Join(dir, name+"-"+stamp+".txt"), []byte(report+"\n"), 0o644)
	t.Logf("raw numbers in %s", dir)
}
