package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// soakRequests is how many requests make the soak end, however short its
// duration (SOAK_REQUESTS, as make soak sets); 0 means the duration alone.
func soakRequests() int {
	n, _ := strconv.Atoi(os.Getenv("SOAK_REQUESTS"))
	return max(n, 0)
}

// goroutines returns the goroutine count the admin endpoint's profiler
// reports ("goroutine profile: total N").
func goroutines(t *testing.T, admin string) int {
	t.Helper()
	resp, err := http.Get(admin + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "goroutine profile: total ")))
	if err != nil {
		t.Fatalf("goroutine profile %q: %v", line, err)
	}
	return n
}

// rss returns the process's resident memory (VmRSS), in bytes.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// soakDuration is how long the chaos soak runs: a short smoke in the
// normal test run, longer with make soak (SOAK_DURATION=2m).
func soakDuration() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("SOAK_DURATION")); err == nil && d > 0 {
		return d
	}
	return 8 * time.Second
}

// verdict is what the client saw of one request.
type verdict string

const (
	seenOK        verdict = "ok"          // complete and checksum-valid
	seenExplained verdict = "explained"   // an error response naming its cause
	seenBroken    verdict = "broken"      // a visibly failed transfer
	seenAborted   verdict = "aborted"     // the client gave up on purpose
	seenWrong     verdict = "WRONG"       // a complete-looking response that is not
	seenUnknown   verdict = "unexplained" // an error without fcgiscope's cause
)

type soakResult struct {
	rid     int
	path    string
	verdict verdict
	status  int
	cause   string
	note    string
}

// checkSummed verifies a sum.php body: its last line names the sha256 of
// everything before it.
func checkSummed(body []byte) bool {
	i := strings.LastIndex(string(body), "sha256=")
	if i < 0 || !strings.HasSuffix(string(body), "\n") {
		return false
	}
	sum := sha256.Sum256(body[:i])
	return strings.TrimSpace(string(body[i+len("sha256="):])) == hex.EncodeToString(sum[:])
}

func soakRequest(client *http.Client, base string, rid int, rng *rand.Rand) soakResult {
	var path string
	abort := false
	switch n := rng.IntN(100); {
	case n < 55:
		path = "/sum.php?kb=4"
	case n < 70:
		path = "/sum.php?kb=200" // larger than the hold-back: streamed
	case n < 78:
		path = "/sum.php?kb=40&ms=100" // outlives request_terminate_timeout
	case n < 86:
		path = "/crash.php?sig=11"
	case n < 92:
		path = "/crash.php?sig=9&flush=1"
	default:
		path = "/sum.php?kb=20&ms=20"
		abort = true
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	path += fmt.Sprintf("%srid=%d", sep, rid)
	r := soakResult{rid: rid, path: path}
	ctx := context.Background()
	if abort {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(20+rng.IntN(150))*time.Millisecond)
		defer cancel()
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", base+path, nil)
	req.Header.Set("Accept", "application/problem+json")
	resp, err := client.Do(req)
	if err != nil {
		if abort {
			r.verdict = seenAborted
		} else {
			r.verdict, r.note = seenBroken, err.Error()
		}
		return r
	}
	defer resp.Body.Close()
	r.status, r.cause = resp.StatusCode, resp.Header.Get("X-Fcgiscope-Cause")
	body, err := io.ReadAll(resp.Body)
	switch {
	case err != nil && abort:
		r.verdict = seenAborted
	case err != nil:
		r.verdict, r.note = seenBroken, err.Error()
	case r.cause != "":
		r.verdict = seenExplained
	case resp.StatusCode >= 500:
		r.verdict, r.note = seenUnknown, string(body)
	case strings.HasPrefix(path, "/sum.php") && checkSummed(body):
		r.verdict = seenOK
	case strings.HasPrefix(path, "/crash.php"):
		// A worker that survived its signal says so; anything else
		// complete-looking from a crash script would be wrong.
		if strings.Contains(string(body), "survived") {
			r.verdict = seenOK
		} else {
			r.verdict, r.note = seenWrong, fmt.Sprintf("%d %q", resp.StatusCode, body)
		}
	default:
		r.verdict, r.note = seenWrong, fmt.Sprintf("%d, %d bytes, checksum invalid", resp.StatusCode, len(body))
	}
	return r
}

// TestChaosSoak runs steady traffic through nginx -> fcgiscope -> php-fpm
// while workers are killed, php-fpm reloads and restarts and clients give
// up, then checks every request from both ends: nothing silently wrong,
// one log line each with a cause that matches what the client saw, and
// fcgiscope's file descriptors back to where they started.
func TestChaosSoak(t *testing.T) {
	testbed.RequireFPM(t)
	testbed.RequireNginx(t)
	dur := soakDuration()
	fpm := testbed.StartFPM(t, testbed.FPMConfig{MaxChildren: 4, RequestTerminateTimeout: 3 * time.Second})
	sock := filepath.Join(testbed.ShortTempDir(t), "fcgiscope.sock")
	admin := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	p := testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN=unix:"+sock, "FCGISCOPE_LISTEN_MODE=0666",
		"FCGISCOPE_UPSTREAM="+fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath, "FCGISCOPE_QUEUE_TIMEOUT=10s",
		"FCGISCOPE_ADMIN_LISTEN="+admin, "FCGISCOPE_ADMIN_PPROF=true")
	adminURL := "http://" + admin
	root := testbed.PHPRoot(t)
	ngxOff := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: "unix:" + sock, Root: root})
	ngxOn := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: "unix:" + sock, Root: root, KeepConn: true})
	time.Sleep(200 * time.Millisecond)
	fdsBefore := countFDs(t, p.Pid)
	goroutinesBefore, rssBefore := goroutines(t, adminURL), rss(t, p.Pid)

	stop := make(chan struct{})
	var mu sync.Mutex
	var results []soakResult
	var wg sync.WaitGroup
	var ridSeq int
	for c := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 42))
			client := &http.Client{Timeout: 30 * time.Second}
			base := ngxOff.URL
			if c%2 == 1 {
				base = ngxOn.URL
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				ridSeq++
				rid := ridSeq
				mu.Unlock()
				r := soakRequest(client, base, rid, rng)
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		}()
	}

	// The chaos: kill a worker, reload, restart.
	kills, reloads, restarts := 0, 0, 0
	rng := rand.New(rand.NewPCG(7, 7))
	deadline := time.Now().Add(dur)
	enough := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return ridSeq >= soakRequests()
	}
	for time.Now().Before(deadline) || !enough() {
		time.Sleep(time.Duration(200+rng.IntN(300)) * time.Millisecond)
		switch n := rng.IntN(10); {
		case n < 6:
			if pids := fpm.WorkerPIDs(); len(pids) > 0 {
				syscall.Kill(pids[rng.IntN(len(pids))], syscall.SIGKILL)
				kills++
			}
		case n < 8:
			fpm.Signal(syscall.SIGUSR2)
			reloads++
		default:
			fpm.Restart(t)
			restarts++
		}
	}
	close(stop)
	wg.Wait()

	counts := map[verdict]int{}
	for _, r := range results {
		counts[r.verdict]++
		if r.verdict == seenWrong || r.verdict == seenUnknown {
			t.Errorf("request %d %s: %s: %s", r.rid, r.path, r.verdict, r.note)
		}
	}

	// Every request has one log line that agrees with the client.
	var want []int
	for _, r := range results {
		if r.verdict != seenAborted {
			want = append(want, r.rid)
		}
	}
	lines := waitForLines(t, p, want)
	nginxRetries := 0
	for _, r := range results {
		ls := lines[r.rid]
		if len(ls) > 1 {
			// nginx sends a request again when it failed on a cached
			// keep-alive connection before anything reached the client
			// (fastcgi_next_upstream): each attempt is a request of its
			// own to fcgiscope, and each must have failed.
			retriedAfterFailure := true
			for _, l := range ls[:len(ls)-1] {
				if l["outcome"] == "ok" {
					retriedAfterFailure = false
				}
			}
			if !retriedAfterFailure {
				t.Errorf("request %d (%s, %s) has %d log lines", r.rid, r.path, r.verdict, len(ls))
			}
			nginxRetries++
			ls = ls[len(ls)-1:]
		}
		if len(ls) == 0 {
			if r.verdict != seenAborted {
				t.Errorf("request %d (%s, %s) has no log line", r.rid, r.path, r.verdict)
			}
			continue
		}
		l := ls[0]
		switch r.verdict {
		case seenOK:
			if l["outcome"] != "ok" {
				t.Errorf("request %d: client saw a good response, log says %v", r.rid, l["outcome"])
			}
		case seenExplained:
			if l["cause"] != r.cause {
				t.Errorf("request %d: client saw cause %s, log says %v", r.rid, r.cause, l["cause"])
			}
		case seenBroken:
			if l["truncated"] != true && l["cause"] != "client_aborted" {
				t.Errorf("request %d: client saw a broken transfer (%s), log says %v truncated %v", r.rid, r.note, l["cause"], l["truncated"])
			}
		}
	}

	// Resources come back once the traffic stops and nginx has closed its
	// kept-alive connections.
	ngxOff.Stop()
	ngxOn.Stop()
	// Requests still in flight finish first: a script runs up to the
	// pool's request_terminate_timeout (3 s), and the explanation of one
	// nginx gave up on follows its worker a third longer and 2 s more.
	var fdsAfter int
	for range 150 {
		if fdsAfter = countFDs(t, p.Pid); fdsAfter <= fdsBefore+2 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if fdsAfter > fdsBefore+2 {
		t.Errorf("fcgiscope holds %d file descriptors after the soak, %d before", fdsAfter, fdsBefore)
	}
	// Goroutines come back to where they were (the follows of requests
	// nginx gave up on end within their bound); memory the runtime keeps
	// for reuse may stay, within a bound.
	var goroutinesAfter int
	for range 100 {
		if goroutinesAfter = goroutines(t, adminURL); goroutinesAfter <= goroutinesBefore+3 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if goroutinesAfter > goroutinesBefore+3 {
		t.Errorf("fcgiscope runs %d goroutines after the soak, %d before", goroutinesAfter, goroutinesBefore)
	}
	rssAfter := rss(t, p.Pid)
	if rssAfter > rssBefore+64<<20 {
		t.Errorf("fcgiscope's resident memory grew from %d to %d MiB over the soak", rssBefore>>20, rssAfter>>20)
	}
	summary := fmt.Sprintf("soak %s: %d requests: %d complete and checksum-valid, %d explained errors, %d broken transfers, %d client aborts, %d silently wrong, %d unexplained; %d worker kills, %d reloads, %d restarts; %d requests nginx sent twice after a failure; fds %d -> %d, goroutines %d -> %d, RSS %.1f -> %.1f MiB",
		dur, len(results), counts[seenOK], counts[seenExplained], counts[seenBroken], counts[seenAborted], counts[seenWrong], counts[seenUnknown], kills, reloads, restarts, nginxRetries, fdsBefore, fdsAfter,
		goroutinesBefore, goroutinesAfter, float64(rssBefore)/(1<<20), float64(rssAfter)/(1<<20))
	t.Log(summary)
	if os.Getenv("SOAK_DURATION") != "" {
		fmt.Println(summary)
	}
}

func countFDs(t *testing.T, pid int) int {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// waitForLines collects fcgiscope's request log lines by the rid in their
// URI, waiting until every rid in want has one.
func waitForLines(t *testing.T, p *testbed.Process, want []int) map[int][]map[string]any {
	deadline := time.Now().Add(15 * time.Second)
	for {
		byRID := map[int][]map[string]any{}
		sc := bufio.NewScanner(strings.NewReader(p.Output()))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil || m["message"] != "request" {
				continue
			}
			uri, _ := m["uri"].(string)
			i := strings.LastIndex(uri, "rid=")
			if i < 0 {
				continue
			}
			var rid int
			fmt.Sscanf(uri[i+4:], "%d", &rid)
			byRID[rid] = append(byRID[rid], m)
		}
		complete := true
		for _, rid := range want {
			if len(byRID[rid]) == 0 {
				complete = false
				break
			}
		}
		if complete || time.Now().After(deadline) {
			return byRID
		}
		time.Sleep(100 * time.Millisecond)
	}
}
