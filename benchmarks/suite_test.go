package benchmarks

import (
	"bufio"
	"encoding/json"
	"fmt"
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

// socatRelay starts socat as a dumb byte relay from listen to upstream.
// It returns socat's pid.
func socatRelay(t *testing.T, listen, upstream string) int {
	t.Helper()
	toSocat := func(a string) string {
		if p, ok := strings.CutPrefix(a, "unix:"); ok {
			return "UNIX-CONNECT:" + p
		}
		return "TCP:" + a
	}
	from := "TCP-LISTEN:" + strings.TrimPrefix(listen, "127.0.0.1:") + ",bind=127.0.0.1,reuseaddr,fork"
	if p, ok := strings.CutPrefix(listen, "unix:"); ok {
		from = "UNIX-LISTEN:" + p + ",fork,mode=666"
	}
	cmd := exec.Command("socat", from, toSocat(upstream))
	if err := cmd.Start(); err != nil {
		t.Fatalf("socat: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	time.Sleep(200 * time.Millisecond)
	return cmd.Process.Pid
}

// config is one way for nginx to reach php-fpm.
type config struct {
	name string
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

// TestNginxLoadRatios measures hello.php through nginx with php-fpm reached
// directly, through fcgiscope and through socat, over unix sockets and TCP,
// with fastcgi_keep_conn off and on, alternating the configurations in
// every round.
func TestNginxLoadRatios(t *testing.T) {
	if os.Getenv("FCGISCOPE_BENCH") != "1" {
		t.Skip("benchmarks run with make bench (FCGISCOPE_BENCH=1)")
	}
	for _, tool := range []string{"wrk", "socat"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: apt-get install %s", tool, tool)
		}
	}
	root := testbed.PHPRoot(t)
	// One php-fpm, fcgiscope and socat per transport, kept for the whole
	// run; nginx is started for each measurement and stopped after it,
	// because nginx's idle keep-alive connections pin php-fpm workers and
	// would starve the next configuration.
	type target struct {
		name, pass string
		keep       bool
		pids       map[string]int // the processes whose CPU time is measured
	}
	var targets []target
	for _, transport := range []string{"unix", "tcp"} {
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
		fsAddr, kaAddr, socatAddr := addr("fcgiscope"), addr("keepalive"), addr("socat")
		fs := testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN="+fsAddr, "FCGISCOPE_LISTEN_MODE=0666", "FCGISCOPE_UPSTREAM="+fpm.Addr,
			"FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath, "FCGISCOPE_LOG_LEVEL=warn")
		// The same with kept upstream connections, one worker fewer
		// than the pool has.
		ka := testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN="+kaAddr, "FCGISCOPE_LISTEN_MODE=0666", "FCGISCOPE_UPSTREAM="+fpm.Addr,
			"FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath, "FCGISCOPE_LOG_LEVEL=warn", "FCGISCOPE_UPSTREAM_KEEPALIVE=3")
		socat := socatRelay(t, socatAddr, fpm.Addr)
		for _, keep := range []bool{false, true} {
			suffix := fmt.Sprintf("%s keep_conn=%v", transport, keep)
			if !only.MatchString(suffix) {
				continue
			}
			for _, c := range []struct {
				name, pass string
				relay      int
			}{
				{"direct", fpm.Addr, 0}, {"fcgiscope", fsAddr, fs.Pid}, {"fcgiscope+keepalive", kaAddr, ka.Pid}, {"socat", socatAddr, socat},
			} {
				if c.name == "socat" && keep {
					continue // socat relays bytes; keep-alive is nginx's and php-fpm's business
				}
				pids := map[string]int{"php-fpm": fpm.Pid}
				if c.relay != 0 {
					pids["relay"] = c.relay
				}
				targets = append(targets, target{c.name + " " + suffix, c.pass, keep, pids})
			}
		}
	}
	var configs []config
	for _, tg := range targets {
		configs = append(configs, config{name: tg.name})
	}

	var samples []sample
	for round := range rounds {
		for _, tg := range targets {
			ngx := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: tg.pass, Root: root, KeepConn: tg.keep})
			tg.pids["nginx"] = ngx.Pid
			cpu := newCPUMeter(tg.pids)
			r := runWrk(t, ngx.URL+"/hello.php")
			r.CPU = cpu.perRequest(r.Requests)
			ngx.Stop()
			samples = append(samples, sample{tg.name, round, r})
			t.Logf("round %d %-32s %8.0f req/s p50 %.2f ms p99 %.2f ms errors %d cpu µs/request %v", round, tg.name, r.RPS, r.P50, r.P99, r.Errors, r.CPU)
		}
	}

	type series struct {
		rps, p50, p99, relayCPU, fpmCPU []float64
		errs                            int
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
				x.errs += s.Result.Errors
			}
		}
		return x
	}
	var table []string
	table = append(table, fmt.Sprintf("%-42s %8s %6s %7s %8s %6s %10s %6s  %s", "configuration", "req/s", "±%", "p50 ms", "p99 ms", "ratio", "added p50", "errors", "CPU µs/request: relay, php-fpm"))
	for _, c := range configs {
		x := by(c.name)
		base := by(strings.Replace(c.name, strings.Fields(c.name)[0], "direct", 1))
		relay := "-"
		if m := median(x.relayCPU); m > 0 {
			relay = fmt.Sprintf("%.0f", m)
		}
		table = append(table, fmt.Sprintf("%-42s %8.0f %5.1f%% %7.3f %8.3f %5.2fx %+7.3f ms %6d  %s, %.0f",
			c.name, median(x.rps), spread(x.rps), median(x.p50), median(x.p99), median(x.rps)/median(base.rps), median(x.p50)-median(base.p50), x.errs, relay, median(x.fpmCPU)))
	}
	report := strings.Join(table, "\n")
	fmt.Println("\nnginx + hello.php, wrk -t" + strconv.Itoa(min(2, conns)) + " -c" + strconv.Itoa(conns) + " -d" + duration.String() + ", median of " + strconv.Itoa(rounds) + " alternating rounds; ratio = throughput / direct\n" + report)
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
