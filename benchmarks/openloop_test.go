package benchmarks

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// loadFraction is the open-loop test's request rate as a fraction of
// direct's saturation throughput. At half of it the queues are short, so
// the latencies are the path's own rather than the queue's.
var loadFraction = envFloat("BENCH_LOAD_FRACTION", 0.5)

// openLoopResult is what one open-loop run measured. Latencies are in
// microseconds, from the time a request was scheduled to be sent until its
// whole response was read.
type openLoopResult struct {
	TargetRPS   float64 `json:"target_rps"`
	AchievedRPS float64 `json:"achieved_rps"`
	Requests    int     `json:"requests"` // scheduled in the measured window
	Errors      int     `json:"errors"`
	P50         float64 `json:"p50_us"`
	P90         float64 `json:"p90_us"`
	P99         float64 `json:"p99_us"`
	P999        float64 `json:"p99_9_us"`
	Max         float64 `json:"max_us"`
	// SendLagP99 is how late, at the 99th percentile, the generator
	// started requests after their scheduled time. The lag is part of
	// every latency above, as it must be, and of every configuration's
	// alike; a large one means the generator, not the path, was slow.
	SendLagP99 float64 `json:"send_lag_p99_us"`
	// CPU is the CPU time per request, in microseconds, of nginx,
	// php-fpm and the relay, each with its children.
	CPU map[string]float64 `json:"cpu_us_per_request,omitempty"`
	// FirstError describes the first failed request, if one did.
	FirstError string `json:"first_error,omitempty"`
}

// sleepUntil blocks the calling OS thread until at. On the 2-CPU machine
// this suite was written on, time.Sleep woke up some 0.6 ms late at the
// median, as long as a whole request through nginx takes, and nanosleep(2)
// some 0.1 ms late; the caller locks its goroutine to the thread, and the
// Go scheduler hands the thread's P to other goroutines during the sleep.
//
// A signal cuts nanosleep short (EINTR), so it sleeps again for what is
// left rather than send early.
func sleepUntil(at time.Time) {
	for d := time.Until(at); d > 0; d = time.Until(at) {
		ts := syscall.NsecToTimespec(int64(d))
		syscall.Nanosleep(&ts, nil)
	}
}

// openLoop sends GET url at a fixed rate for warmup plus d and measures
// the requests scheduled after the warm-up. It is an open-loop generator:
// request i is due at t0 + i/rate whether or not earlier ones have been
// answered, each is sent on its own goroutine over a pool of keep-alive
// connections (httpClient), and its latency counts from when it was due,
// not from when it was sent. A closed-loop tool such as wrk sends the next
// request only when a connection is free again, so a slow response delays the requests
// behind it instead of being counted against them (coordinated omission),
// and its tail latencies flatter a path that stalls.
//
// A response counts as an error unless it is 200 and its body begins with
// prefix. Every request has finished or timed out (after 5 s) when openLoop
// returns, so no goroutine outlives it.
func openLoop(rawURL, prefix string, rate float64, warmup, d time.Duration) (openLoopResult, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return openLoopResult{}, err
	}
	client := &httpClient{addr: u.Host, request: []byte("GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: fcgiscope-openloop\r\n\r\n"),
		slots: make(chan struct{}, openLoopConns)}
	defer client.close()

	skip := int(rate * warmup.Seconds())
	n := int(rate * d.Seconds())
	// Written by one goroutine each, at its own index, and read only
	// after all have finished: no locks on the hot path.
	latency := make([]time.Duration, n) // -1 for a failed request
	lag := make([]time.Duration, n)
	var failed atomic.Int64
	var firstError atomic.Pointer[error]
	var wg sync.WaitGroup

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t0 := time.Now().Add(10 * time.Millisecond)
	due := func(i int) time.Time { return t0.Add(time.Duration(float64(i) / rate * float64(time.Second))) }
	for i := range skip + n {
		at := due(i)
		sleepUntil(at)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent := time.Since(at)
			err := client.get(prefix)
			took := time.Since(at)
			if i < skip {
				return // warm-up: the connection pool grows to what the rate needs
			}
			j := i - skip
			lag[j] = sent
			if err != nil {
				latency[j] = -1
				failed.Add(1)
				firstError.CompareAndSwap(nil, &err)
				return
			}
			latency[j] = took
		}()
	}
	wg.Wait()
	elapsed := time.Since(due(skip))

	ok := make([]time.Duration, 0, n)
	for _, l := range latency {
		if l >= 0 {
			ok = append(ok, l)
		}
	}
	sort.Slice(ok, func(a, b int) bool { return ok[a] < ok[b] })
	sort.Slice(lag, func(a, b int) bool { return lag[a] < lag[b] })
	var firstErr string
	if e := firstError.Load(); e != nil {
		firstErr = (*e).Error()
	}
	return openLoopResult{
		TargetRPS:   rate,
		AchievedRPS: float64(len(ok)) / elapsed.Seconds(),
		Requests:    n,
		Errors:      int(failed.Load()),
		P50:         percentile(ok, 50),
		P90:         percentile(ok, 90),
		P99:         percentile(ok, 99),
		P999:        percentile(ok, 99.9),
		Max:         percentile(ok, 100),
		SendLagP99:  percentile(lag, 99),
		FirstError:  firstErr,
	}, nil
}

// httpClient sends one fixed GET over a pool of at most openLoopConns
// kept-alive HTTP/1.1 connections; a request that finds them all busy waits
// for one, and the wait counts in its latency, as in wrk2. A pool that grew
// whenever a response was late would, on a small machine, spend the CPU the
// paths need on new connections once one of them fell behind, and turn a
// moment's queue into a collapse. It is written for the open loop instead
// of net/http's client, which costs about as much CPU per request as nginx
// and php-fpm together and would compete for it with what it measures. It
// reads what nginx sends: a status line, headers, and a body framed by
// Content-Length or chunked.
type httpClient struct {
	addr    string
	request []byte
	slots   chan struct{} // one per connection in use
	mu      sync.Mutex
	idle    []*httpConn
	all     []*httpConn
}

// openLoopConns bounds the open loop's connections to nginx: far more than
// the requests in flight at any rate a path keeps up with.
const openLoopConns = 64

type httpConn struct {
	nc net.Conn
	br *bufio.Reader
}

// take waits for a connection slot and returns an idle connection, or a new
// one; the caller gives the slot back with put or drop.
func (c *httpClient) take() (*httpConn, error) {
	c.slots <- struct{}{}
	c.mu.Lock()
	if n := len(c.idle); n > 0 {
		hc := c.idle[n-1]
		c.idle = c.idle[:n-1]
		c.mu.Unlock()
		return hc, nil
	}
	c.mu.Unlock()
	nc, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
	if err != nil {
		<-c.slots
		return nil, err
	}
	hc := &httpConn{nc: nc, br: bufio.NewReaderSize(nc, 16<<10)}
	c.mu.Lock()
	c.all = append(c.all, hc)
	c.mu.Unlock()
	return hc, nil
}

func (c *httpClient) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, hc := range c.all {
		hc.nc.Close()
	}
}

// get sends the request and reads the whole response, which must be 200
// with a body beginning with prefix. A connection that failed is closed
// and not reused.
func (c *httpClient) get(prefix string) error {
	hc, err := c.take()
	if err != nil {
		return err
	}
	defer func() { <-c.slots }()
	hc.nc.SetDeadline(time.Now().Add(5 * time.Second))
	if err = hc.roundTrip(c.request, prefix); err != nil {
		hc.nc.Close()
		if errors.Is(err, errConnClosing) {
			return nil
		}
		return err
	}
	c.mu.Lock()
	c.idle = append(c.idle, hc)
	c.mu.Unlock()
	return nil
}

func (hc *httpConn) roundTrip(request []byte, prefix string) error {
	if _, err := hc.nc.Write(request); err != nil {
		return err
	}
	line, err := hc.br.ReadSlice('\n')
	if err != nil {
		return fmt.Errorf("reading the status line: %w", err)
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("status %q, want 200", bytes.TrimSpace(line))
	}
	length, chunked, keep := -1, false, true
	for {
		line, err := hc.br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("reading the headers: %w", err)
		}
		h := bytes.TrimSpace(line)
		if len(h) == 0 {
			break
		}
		name, value, _ := bytes.Cut(h, []byte(":"))
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			length, _ = strconv.Atoi(string(value))
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			// nginx closes a connection after keepalive_requests.
			keep = !bytes.EqualFold(value, []byte("close"))
		}
	}
	var body []byte
	switch {
	case chunked:
		for {
			line, err := hc.br.ReadSlice('\n')
			if err != nil {
				return fmt.Errorf("reading a chunk size: %w", err)
			}
			size, err := strconv.ParseInt(string(bytes.TrimSpace(bytes.SplitN(line, []byte(";"), 2)[0])), 16, 32)
			if err != nil {
				return fmt.Errorf("chunk size %q: %w", line, err)
			}
			chunk := make([]byte, size+2) // the data and its CRLF
			if _, err := io.ReadFull(hc.br, chunk); err != nil {
				return fmt.Errorf("reading a chunk: %w", err)
			}
			if size == 0 {
				break
			}
			if len(body) < len(prefix) {
				body = append(body, chunk[:size]...)
			}
		}
	case length >= 0:
		body = make([]byte, length)
		if _, err := io.ReadFull(hc.br, body); err != nil {
			return fmt.Errorf("reading the body: %w", err)
		}
	default:
		return errors.New("a response with neither Content-Length nor chunked: it cannot be reused")
	}
	if !bytes.HasPrefix(body, []byte(prefix)) {
		return fmt.Errorf("body %.100q, want it to begin with %q", body, prefix)
	}
	if !keep {
		return errConnClosing
	}
	return nil
}

// errConnClosing says that a response was whole and good but its
// connection is not to be used again.
var errConnClosing = errors.New("the server closes the connection")

// percentile returns the nearest-rank p-th percentile of sorted, in
// microseconds; 0 when sorted is empty.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return float64(sorted[min(max(rank, 0), len(sorted)-1)].Nanoseconds()) / 1000
}

type openLoopSample struct {
	Config string         `json:"config"`
	Round  int            `json:"round"`
	Result openLoopResult `json:"result"`
}

// TestOpenLoopLatency measures the latency hello.php sees through nginx
// (unix sockets, fastcgi_keep_conn off) at a fixed request rate below
// saturation, with php-fpm reached directly, through the bare relay and
// through fcgiscope with its defaults, alternating the configurations in
// every round. wrk's closed loop answers "how many requests per second at
// most"; this answers "how much later does a request arrive at a load a
// site actually runs at", tail included, which is what a relay in the path
// costs its users.
func TestOpenLoopLatency(t *testing.T) {
	if os.Getenv("FCGISCOPE_BENCH") != "1" {
		t.Skip("benchmarks run with make bench (FCGISCOPE_BENCH=1)")
	}
	const variant = "unix keep_conn=false"
	if !only.MatchString(variant) {
		t.Skipf("BENCH_ONLY=%q does not match %q, the only variant this test measures", only, variant)
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Fatalf("wrk is needed: apt-get install wrk")
	}
	const script = "hello.php"
	root := testbed.PHPRoot(t)
	bareBin := buildBareRelay(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{MaxChildren: 4})
	addr := func(name string) string {
		return "unix:" + filepath.Join(testbed.ShortTempDir(t), name+".sock")
	}
	relays := startRelays(t, fpm, bareBin, addr, map[string]bool{"bare-relay": true, "fcgiscope": true, "fcgiscope-ka0": true, "baseline": true})

	// The rate is a fraction of what nginx and php-fpm manage directly,
	// measured here with wrk's closed loop, so that the load is the same
	// share of this machine's capacity wherever the suite runs.
	ngx := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: fpm.Addr, Root: root})
	checkResponse(t, ngx.URL+"/"+script, script)
	saturation := runWrk(t, ngx.URL+"/"+script)
	ngx.Stop()
	rate := loadFraction * saturation.RPS
	// The warm-up lets the generator's connection pool and php-fpm settle
	// before anything is recorded.
	warmup := min(time.Second, duration/4)
	t.Logf("direct saturation %.0f req/s; open loop at %.2f x = %.0f req/s for %s after a %s warm-up", saturation.RPS, loadFraction, rate, duration, warmup)

	var samples []openLoopSample
	for round := range rounds {
		for _, r := range relays {
			ngx := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: r.pass, Root: root})
			url := ngx.URL + "/" + script
			checkResponse(t, url, script)
			pids := map[string]int{"php-fpm": fpm.Pid, "nginx": ngx.Pid}
			if r.pid != 0 {
				pids["relay"] = r.pid
			}
			cpu := newCPUMeter(pids)
			res, err := openLoop(url, bodyPrefix[script], rate, warmup, duration)
			if err != nil {
				t.Fatal(err)
			}
			// The warm-up's requests are in the CPU time too.
			res.CPU = cpu.perRequest(res.Requests + int(rate*warmup.Seconds()))
			ngx.Stop()
			waitIdle(t, fpm.Pid, r.pid)
			time.Sleep(r.settle)
			if res.Errors == res.Requests {
				t.Fatalf("%s: all %d requests failed", r.name, res.Requests)
			}
			samples = append(samples, openLoopSample{r.name, round, res})
			t.Logf("round %d %-10s %7.0f req/s p50 %.0f µs p99 %.0f µs p99.9 %.0f µs max %.0f µs errors %d send lag p99 %.0f µs",
				round, r.name, res.AchievedRPS, res.P50, res.P99, res.P999, res.Max, res.Errors, res.SendLagP99)
			if res.Errors > 0 {
				t.Logf("round %d %s: the first of %d failed requests: %s", round, r.name, res.Errors, res.FirstError)
			}
		}
	}

	type series struct {
		achieved, p50, p90, p99, p999, max, lag []float64
		relayCPU, fpmCPU, nginxCPU              []float64
		errs                                    int
	}
	by := func(name string) series {
		var x series
		for _, s := range samples {
			if s.Config == name {
				r := s.Result
				x.achieved = append(x.achieved, r.AchievedRPS)
				x.p50, x.p90, x.p99 = append(x.p50, r.P50), append(x.p90, r.P90), append(x.p99, r.P99)
				x.p999, x.max, x.lag = append(x.p999, r.P999), append(x.max, r.Max), append(x.lag, r.SendLagP99)
				x.errs += r.Errors
				x.relayCPU = append(x.relayCPU, r.CPU["relay"])
				x.fpmCPU = append(x.fpmCPU, r.CPU["php-fpm"])
				x.nginxCPU = append(x.nginxCPU, r.CPU["nginx"])
			}
		}
		return x
	}
	direct := by("direct")
	var table []string
	table = append(table, fmt.Sprintf("%-13s %8s %8s %8s %8s %8s %8s %8s %s %6s %s  %s",
		"configuration", "target/s", "achieved", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", cell("added p99 µs", 12), "errors", cell("send lag p99 µs", 15),
		"CPU µs/request: relay, php-fpm, nginx"))
	for _, r := range relays {
		x := by(r.name)
		relay := "-"
		if r.pid != 0 {
			relay = fmt.Sprintf("%.0f", median(x.relayCPU))
		}
		table = append(table, fmt.Sprintf("%-13s %8.0f %8.0f %8.3f %8.3f %8.3f %8.3f %8.3f %+12.0f %6d %15.0f  %s, %.0f, %.0f",
			r.name, rate, median(x.achieved), median(x.p50)/1000, median(x.p90)/1000, median(x.p99)/1000, median(x.p999)/1000, median(x.max)/1000,
			median(x.p99)-median(direct.p99), x.errs, median(x.lag), relay, median(x.fpmCPU), median(x.nginxCPU)))
	}
	// A configuration that cannot keep up with the rate builds a queue
	// that grows for the whole run, and its latencies measure the run's
	// length rather than the path: say so next to the numbers.
	for _, r := range relays {
		if x := by(r.name); median(x.achieved) < 0.95*rate {
			table = append(table, fmt.Sprintf("note: %s answered %.0f of the %.0f req/s sent: the rate is above its saturation on this machine, "+
				"so its latencies are a growing queue's; lower BENCH_LOAD_FRACTION to compare the paths", r.name, median(x.achieved), rate))
		}
	}
	report := fmt.Sprintf("open loop: nginx + %s over %s, %.0f req/s = %.2f x direct's saturation (%.0f req/s with wrk -c%d), %s after a %s warm-up, "+
		"php-fpm pm.max_children 4, median of %d alternating rounds; latency from the scheduled send time\n%s",
		script, variant, rate, loadFraction, saturation.RPS, conns, duration, warmup, rounds, strings.Join(table, "\n"))
	fmt.Println("\n" + report)
	writeResults(t, "openloop", map[string]any{"saturation": saturation, "load_fraction": loadFraction, "rate": rate, "samples": samples}, report)
}
