package fpm

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fcgiscope/fcgiscope/internal/cgi"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/fcgitest"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// The files under testdata/status were written by TestCaptureStatusAndSlowlog
// from a real php-fpm 8.2; see testdata/status/README.md.

// The request the capture keeps running while it takes the full status page:
// its script name, query and user have the characters that broke the JSON of
// older php-fpm versions.
const (
	weirdScriptName = `/we"i\rd.php`
	weirdQuery      = "s=3&q=\"x\\y\t\x01\xffé</>"
	weirdUser       = `bo"b\`
	// weirdURI is what php-fpm reports: SCRIPT_NAME?QUERY_STRING, with
	// the invalid UTF-8 byte dropped by php-fpm's JSON encoder.
	weirdURI = weirdScriptName + "?s=3&q=\"x\\y\t\x01é</>"
)

func fpmAddr(f *testbed.FPM) fcgi.Addr {
	return fcgi.Addr{Network: f.Network, Address: f.Address}
}

// fcgiGet sends a GET for script under root, as nginx would.
func fcgiGet(ctx context.Context, addr fcgi.Addr, root, scriptName, query string, extra ...string) (*fcgitest.Response, error) {
	params := []fcgi.Pair{
		{Name: "REQUEST_METHOD", Value: "GET"},
		{Name: "SCRIPT_FILENAME", Value: filepath.Join(root, scriptName)},
		{Name: "SCRIPT_NAME", Value: scriptName},
		{Name: "QUERY_STRING", Value: query},
		{Name: "REQUEST_URI", Value: scriptName + "?" + query},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		params = append(params, fcgi.Pair{Name: extra[i], Value: extra[i+1]})
	}
	return fcgitest.Do(ctx, addr, &fcgitest.Request{Params: params})
}

// goAndWait runs fn in a goroutine and waits for it at the end of the test.
func goAndWait(t *testing.T, fn func()) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); fn() }()
	t.Cleanup(wg.Wait)
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testdataFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseStatusCapturedFromPHPFPM82(t *testing.T) {
	t.Run("json", func(t *testing.T) {
		st, err := ParseStatus(testdataFile(t, "status/json.json"))
		if err != nil {
			t.Fatal(err)
		}
		if st.Pool != "www" || st.ProcessManager != "static" || st.TotalProcesses != 3 ||
			st.IdleProcesses+st.ActiveProcesses != 3 || st.ActiveProcesses < 1 || st.AcceptedConn < 1 {
			t.Errorf("%+v", st)
		}
		if st.StartTime.Year() < 2020 || st.Processes != nil {
			t.Errorf("start time %v, processes %v", st.StartTime, st.Processes)
		}
	})
	t.Run("full with a running request", func(t *testing.T) {
		st, err := ParseStatus(testdataFile(t, "status/full.json"))
		if err != nil {
			t.Fatal(err)
		}
		if st.Pool != "www" || st.TotalProcesses != 3 || len(st.Processes) != 3 {
			t.Fatalf("%+v", st)
		}
		var weird, self *Process
		for i, p := range st.Processes {
			if p.PID <= 0 || p.StartTime.IsZero() || p.State == "" {
				t.Errorf("process %+v", p)
			}
			switch {
			case strings.HasPrefix(p.RequestURI, "/we"):
				weird = &st.Processes[i]
			case p.RequestURI == "/fpm-status?json&full":
				self = &st.Processes[i]
			}
		}
		if weird == nil || self == nil {
			t.Fatalf("processes %+v", st.Processes)
		}
		if weird.RequestURI != weirdURI || weird.User != weirdUser || weird.Method != "GET" ||
			!strings.HasSuffix(weird.Script, weirdScriptName) || weird.State != "Running" {
			t.Errorf("running request %+v\nwant uri %q user %q", *weird, weirdURI, weirdUser)
		}
		if weird.RequestDuration < 400*time.Millisecond || weird.RequestDuration > 3*time.Second {
			t.Errorf("request duration %v", weird.RequestDuration)
		}
		if self.State != "Running" || self.Script != "-" {
			t.Errorf("status request %+v", *self)
		}
		busy, longest := st.Busiest()
		if busy != 1 || longest.PID != weird.PID {
			t.Errorf("Busiest = %d, %+v", busy, longest)
		}
		// encoding/json agrees with the scanner on php-fpm 8.2.36's output.
		var doc struct {
			Processes []struct {
				URI  string `json:"request uri"`
				User string `json:"user"`
			} `json:"processes"`
		}
		if err := json.Unmarshal(testdataFile(t, "status/full.json"), &doc); err != nil {
			t.Fatalf("encoding/json: %v", err)
		}
		for i, p := range doc.Processes {
			if p.URI != st.Processes[i].RequestURI || p.User != st.Processes[i].User {
				t.Errorf("encoding/json read %q %q, ParseStatus %q %q", p.URI, p.User, st.Processes[i].RequestURI, st.Processes[i].User)
			}
		}
	})
	t.Run("unescaped as older php-fpm wrote it", func(t *testing.T) {
		// full-unescaped.json is full.json with every string value
		// written raw, as php-fpm did before it JSON-escaped them.
		raw := testdataFile(t, "status/full-unescaped.json")
		if json.Valid(raw) {
			t.Fatal("full-unescaped.json is valid JSON; it should show the breakage")
		}
		if got := unescapeStatusValues(testdataFile(t, "status/full.json")); string(got) != string(raw) {
			t.Errorf("full-unescaped.json is stale; regenerate with FCGISCOPE_CAPTURE=1")
		}
		want, err := ParseStatus(testdataFile(t, "status/full.json"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseStatus(raw)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("unescaped document read differently:\n got %+v\nwant %+v", got.Processes, want.Processes)
		}
	})
}

// unescapeStatusValues rewrites every string value of a php-fpm status
// document raw, as php-fpm wrote it before it escaped them.
func unescapeStatusValues(b []byte) []byte {
	re := regexp.MustCompile(`:"((?:[^"\\]|\\.)*)"`)
	return re.ReplaceAllFunc(b, func(m []byte) []byte {
		var s string
		if err := json.Unmarshal(m[1:], &s); err != nil {
			return m
		}
		return []byte(`:"` + s + `"`)
	})
}

func TestParseStatusReadsBrokenJSON(t *testing.T) {
	const head = `{"pool":"www","process manager":"dynamic","start time":1795780000,"start since":5,"accepted conn":7,` +
		`"listen queue":0,"max listen queue":0,"listen queue len":0,"idle processes":0,"active processes":1,` +
		`"total processes":1,"max active processes":1,"max children reached":0,"slow requests":0, "processes":[`
	proc := func(uri, user, script string) string {
		return `{"pid":42,"state":"Running","start time":1795780000,"start since":5,"requests":3,"request duration":1500000,` +
			`"request method":"POST","request uri":"` + uri + `","content length":12,"user":"` + user + `","script":"` + script +
			`","last request cpu":0.00,"last request memory":0}`
	}
	doc := func(uri, user, script string) string { return head + proc(uri, user, script) + "]}" }
	tests := []struct {
		name              string
		in                string
		uri, user, script string
	}{
		{"escaped", doc(`\/a.php?q=\"x\\y\u00e9`, `bo\"b`, `\/srv\/a.php`), `/a.php?q="x\yé`, `bo"b`, `/srv/a.php`},
		{"raw quote", doc(`/a.php?q="x`, `-`, `/srv/a.php`), `/a.php?q="x`, "-", "/srv/a.php"},
		{"raw quote and backslash", doc(`/a.php?q="x\y"`, `-`, `/srv/a.php`), `/a.php?q="x\y"`, "-", "/srv/a.php"},
		{"raw backslash escape look-alike", doc(`/a.php?q=\n\"`, `-`, `/srv/a.php`), `/a.php?q=\n\"`, "-", "/srv/a.php"},
		{"raw trailing backslash", doc(`/a.php?q=\`, `bo"b\`, `/srv/a\b".php`), `/a.php?q=\`, `bo"b\`, `/srv/a\b".php`},
		{"raw key look-alike", doc(`/a.php?q=","x":"`, `-`, `/srv/a.php`), `/a.php?q=","x":"`, "-", "/srv/a.php"},
		{"raw object end look-alike", doc(`/a.php?q="}x`, `-`, `/srv/a.php`), `/a.php?q="}x`, "-", "/srv/a.php"},
		{"raw control characters", doc("/a.php?q=\t\x01\n", `-`, `/srv/a.php`), "/a.php?q=\t\x01\n", "-", "/srv/a.php"},
		{"raw invalid UTF-8", doc("/a.php?q=\xff\"", `-`, `/srv/a.php`), "/a.php?q=\uFFFD\"", "-", "/srv/a.php"},
		{"with CGI headers", "Content-Type: application/json\r\n\r\n" + doc(`\/a.php`, `-`, `-`), "/a.php", "-", "-"},
		{"pretty", strings.ReplaceAll(doc(`\/a.php`, `-`, `-`), `,"`, ",\n  \""), "/a.php", "-", "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := ParseStatus([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Processes) != 1 {
				t.Fatalf("processes %+v", st.Processes)
			}
			p := st.Processes[0]
			if p.RequestURI != tt.uri || p.User != tt.user || p.Script != tt.script {
				t.Errorf("uri %q user %q script %q\nwant %q %q %q", p.RequestURI, p.User, p.Script, tt.uri, tt.user, tt.script)
			}
			if p.PID != 42 || p.Method != "POST" || p.ContentLength != 12 || p.RequestDuration != 1500*time.Millisecond || p.Requests != 3 {
				t.Errorf("%+v", p)
			}
			if st.Pool != "www" || st.ProcessManager != "dynamic" || st.AcceptedConn != 7 || st.TotalProcesses != 1 {
				t.Errorf("%+v", st)
			}
		})
	}
	bad := []struct{ name, in, want string }{
		{"empty", "", "empty"},
		{"html", "<!DOCTYPE html><html>", "not a JSON object"},
		{"text format", "pool:                 www\nprocess manager:      static\n", "not a JSON object"},
		{"truncated", head + proc(`\/a.php`, "-", "-")[:60], "end of document"},
		{"truncated in a raw string", head + `{"pid":1,"request uri":"/a.php?q="x`, "unterminated string"},
		{"no pool", `{"status":"ok"}`, "no \"pool\""},
		{"array", `[1,2]`, "not a JSON object"},
		{"garbage after", `{"pool":"www"} x`, "after the document"},
		{"missing colon", `{"pool" "www"}`, "want ':'"},
		{"bad key", `{pool:"www"}`, "want a key"},
		{"deep", `{"pool":"www","x":` + strings.Repeat("[", 20) + strings.Repeat("]", 20) + `}`, "too deep"},
		{"bad literal", `{"pool":"www","x":nope}`, "unexpected"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			st, err := ParseStatus([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseStatus = %+v, %v; want an error with %q", st, err, tt.want)
			}
		})
	}
}

func TestStatusBusiestAndSummary(t *testing.T) {
	st := &Status{Pool: "www", TotalProcesses: 4, ActiveProcesses: 4, Processes: []Process{
		{PID: 1, State: "Running", RequestURI: "/report.php?y=2026", Method: "GET", Script: "/srv/report.php", RequestDuration: 41 * time.Second},
		{PID: 2, State: "Running", RequestURI: "/a.php", Method: "POST", Script: "/srv/a.php", RequestDuration: 3 * time.Second},
		{PID: 3, State: "Reading headers", RequestURI: "-", Method: "-", Script: "-", RequestDuration: 10 * time.Second},
		{PID: 4, State: "Running", RequestURI: "/fpm-status?json&full", Method: "GET", Script: "-", RequestDuration: 300 * time.Microsecond},
		// A slot whose worker is still starting, as php-fpm 8.2 shows it.
		{PID: 0, State: "(null)", RequestURI: "-", Method: "-", Script: "-", RequestDuration: 74 * time.Minute},
	}}
	// pid 3 waits on a kept connection: php-fpm counts it as active, but
	// it runs nothing.
	busy, longest := st.Busiest()
	if busy != 2 || longest.PID != 1 || st.Kept() != 1 {
		t.Errorf("Busiest = %d, %+v; Kept = %d", busy, longest, st.Kept())
	}
	st.TotalProcesses = 4
	want := "2 of 4 workers of pool www were busy, 1 more waited for their next request on kept connections; the longest-running request was GET /report.php?y=2026 for 41s (pid 1)"
	if got := st.Summary(); got != want {
		t.Errorf("Summary = %q\nwant %q", got, want)
	}
	st.Processes[0].State = "Idle"
	st.Processes[2].State = "Running"
	st.ListenQueue = 7
	want = "2 of 4 workers of pool www were busy; the longest-running request was - for 10s (pid 3); 7 connections were waiting in the listen queue"
	if got := st.Summary(); got != want {
		t.Errorf("Summary = %q\nwant %q", got, want)
	}
	// Without the process list, from a poll: the poll's own request is
	// not a busy worker.
	st = &Status{Pool: "www", TotalProcesses: 5, ActiveProcesses: 5, path: "/fpm-status", Latency: 4700 * time.Millisecond}
	if busy, _ := st.Busiest(); busy != 4 {
		t.Errorf("Busiest without processes = %d, want 4", busy)
	}
	if got, want := st.Summary(), "4 of 5 workers of pool www were busy; the status page itself waited 4.7s for a free worker"; got != want {
		t.Errorf("Summary = %q, want %q", got, want)
	}
	// The polled path, and another monitor's status requests, are not
	// busy workers; a script that takes ?json is.
	st = &Status{Pool: "www", TotalProcesses: 4, path: "/st", Processes: []Process{
		{PID: 1, State: "Running", RequestURI: "/st?full", Script: "-"},
		{PID: 2, State: "Running", RequestURI: "/status?json&full", Script: "-", RequestDuration: 2 * time.Second},
		{PID: 3, State: "Running", RequestURI: "/x.php?json", Script: "/srv/x.php", RequestDuration: time.Second},
		{PID: 4, State: "Idle", RequestURI: "/y.php", Script: "/srv/y.php", RequestDuration: 5 * time.Second},
	}}
	if busy, longest := st.Busiest(); busy != 1 || longest.PID != 3 {
		t.Errorf("Busiest = %d, %+v", busy, longest)
	}
}

// TestFetchStatusParams checks which FastCGI parameters php-fpm needs to
// serve its status page, and that FetchStatus explains a wrong path.
func TestFetchStatusParams(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{StatusPath: "/fpm-status", MaxChildren: 2})
	addr := fpmAddr(fpm)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// php-fpm counts its processes on a maintenance tick, once a second:
	// a pool that just started may list both workers and count one.
	var st *Status
	eventually(t, 5*time.Second, "the status page to count both workers", func() bool {
		var err error
		if st, err = FetchStatus(ctx, addr, "/fpm-status"); err != nil {
			t.Fatal(err)
		}
		return st.TotalProcesses == 2
	})
	if st.Pool != "www" || len(st.Processes) != 2 || st.At.IsZero() || st.Latency <= 0 {
		t.Errorf("%+v", st)
	}
	t.Logf("idle pool: status answered in %v", st.Latency)

	_, err := FetchStatus(ctx, addr, "/status")
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "pm.status_path") {
		t.Errorf("wrong path: %v", err)
	}

	without := func(drop string, replace ...string) string {
		var params []fcgi.Pair
		for _, p := range PageParams("/fpm-status", "json&full") {
			if p.Name == drop {
				if len(replace) == 0 {
					continue
				}
				p.Value = replace[0]
			}
			params = append(params, p)
		}
		resp, err := fcgitest.Do(ctx, addr, &fcgitest.Request{Params: params})
		if err != nil {
			t.Fatal(err)
		}
		return string(resp.Stdout)
	}
	isStatus := func(out string) bool { return strings.Contains(out, `"pool":"www"`) }
	if !isStatus(without("")) {
		t.Fatal("PageParams do not get the status page")
	}
	for _, name := range []string{"REQUEST_METHOD", "SCRIPT_NAME", "SCRIPT_FILENAME"} {
		if isStatus(without(name)) {
			t.Errorf("php-fpm served the status page without %s; the documentation of FetchStatus is wrong", name)
		}
	}
	for _, name := range []string{"REQUEST_URI", "GATEWAY_INTERFACE", "SERVER_SOFTWARE", "SERVER_PROTOCOL"} {
		if !isStatus(without(name)) {
			t.Errorf("php-fpm needs %s for the status page", name)
		}
	}
	if !isStatus(without("SCRIPT_FILENAME", "/nonexistent/x.txt")) || !isStatus(without("SCRIPT_FILENAME", "")) {
		t.Error("the value of SCRIPT_FILENAME matters")
	}
	if isStatus(without("SCRIPT_NAME", "/fpm-status/")) {
		t.Error("SCRIPT_NAME need not be exactly the status path")
	}
	if out := without("QUERY_STRING"); isStatus(out) || !strings.Contains(out, "process manager:") {
		t.Errorf("without QUERY_STRING: %q, want the text format", out)
	}
}

func TestPollerLatestAndRunning(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{StatusPath: "/fpm-status", MaxChildren: 3})
	root := testbed.PHPRoot(t)
	p := &Poller{Addr: fpmAddr(fpm), Path: "/fpm-status", Interval: 100 * time.Millisecond}
	if _, _, ok := p.Latest(); ok {
		t.Fatal("Latest before any poll")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// Right after php-fpm starts, the status page may show fewer workers
	// and slots in state "(null)" with pid 0.
	eventually(t, 5*time.Second, "a status with every worker", func() bool {
		st, _, ok := p.Latest()
		return ok && st.TotalProcesses == 3
	})
	st, at, _ := p.Latest()
	if st.Pool != "www" || st.ProcessManager != "static" || st.TotalProcesses != 3 || len(st.Processes) != 3 {
		t.Errorf("%+v", st)
	}
	if time.Since(at) > 5*time.Second || !at.Equal(st.At) {
		t.Errorf("at %v", at)
	}
	if busy, _ := st.Busiest(); busy != 0 {
		t.Errorf("idle pool: %d busy (%s)", busy, st.Summary())
	}
	if st.ListenQueueLen != 0 {
		t.Errorf("listen queue len %d on a unix socket", st.ListenQueueLen)
	}
	t.Logf("idle pool: %s; poll latency %v", st.Summary(), p.Stats().LastLatency)

	reqCtx, reqCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer reqCancel()
	goAndWait(t, func() { fcgiGet(reqCtx, fpmAddr(fpm), root, "/sleep.php", `s=3&marker="a\b`) })
	var pid int
	eventually(t, 3*time.Second, "the sleeping request in the status", func() bool {
		st, _, _ := p.Latest()
		for _, pr := range st.Processes {
			if strings.HasPrefix(pr.RequestURI, "/sleep.php") && pr.State == "Running" {
				pid = pr.PID
				return true
			}
		}
		return false
	})
	first, ok := p.Running(pid)
	if !ok || first.RequestURI != `/sleep.php?s=3&marker="a\b` || first.Script != filepath.Join(root, "sleep.php") || first.Method != "GET" {
		t.Fatalf("Running(%d) = %+v, %v", pid, first, ok)
	}
	eventually(t, 3*time.Second, "a longer duration", func() bool {
		pr, ok := p.Running(pid)
		return ok && pr.RequestDuration >= first.RequestDuration+300*time.Millisecond && pr.State == "Running"
	})
	st, _, _ = p.Latest()
	if busy, longest := st.Busiest(); busy != 1 || longest.PID != pid {
		t.Errorf("Busiest = %d, %+v", busy, longest)
	}
	t.Logf("%s", st.Summary())
	if _, ok := p.Running(1); ok {
		t.Error("Running(1)")
	}
	s := p.Stats()
	if s.Polls < 3 || s.Answers < 3 || s.Failures != 0 || s.LastError != "" {
		t.Errorf("stats %+v", s)
	}
}

// TestFetchStatusOnTCPReportsTheListenQueue checks the difference php-fpm
// makes between TCP and unix sockets: it measures the listen queue only on
// TCP.
func TestFetchStatusOnTCPReportsTheListenQueue(t *testing.T) {
	listen := "127.0.0.1:" + strconv.Itoa(testbed.FreePort(t))
	fpm := testbed.StartFPM(t, testbed.FPMConfig{StatusPath: "/fpm-status", MaxChildren: 1, Listen: listen, ListenBacklog: 16})
	root := testbed.PHPRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := FetchStatus(ctx, fpmAddr(fpm), "/fpm-status")
	if err != nil {
		t.Fatal(err)
	}
	if st.ListenQueueLen != 16 {
		t.Errorf("listen queue len %d on TCP with listen.backlog = 16", st.ListenQueueLen)
	}
	// One request runs and two wait; the status request waits behind
	// them.
	for range 3 {
		goAndWait(t, func() { fcgiGet(ctx, fpmAddr(fpm), root, "/sleep.php", "s=1") })
		time.Sleep(50 * time.Millisecond)
	}
	start := time.Now()
	st, err = FetchStatus(ctx, fpmAddr(fpm), "/fpm-status")
	if err != nil {
		t.Fatal(err)
	}
	if st.MaxListenQueue < 2 {
		t.Errorf("max listen queue %d after 3 waiting connections", st.MaxListenQueue)
	}
	t.Logf("saturated TCP pool: status answered after %v; listen queue %d, max %d", time.Since(start), st.ListenQueue, st.MaxListenQueue)
}

// countingRelay forwards connections to target and records how many were
// open at once.
type countingRelay struct {
	addr      fcgi.Addr
	open, max atomic.Int64
	total     atomic.Int64
	foreign   atomic.Int64
}

// peerPID returns the pid of the process at the other end of a unix
// socket connection, or -1.
func peerPID(c net.Conn) int {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return -1
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return -1
	}
	pid := -1
	raw.Control(func(fd uintptr) {
		if cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}

func startCountingRelay(t *testing.T, target fcgi.Addr) *countingRelay {
	t.Helper()
	r := &countingRelay{addr: fcgi.Addr{Network: "unix", Address: filepath.Join(testbed.ShortTempDir(t), "relay.sock")}}
	ln, err := net.Listen("unix", r.addr.Address)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Other processes on the machine may probe unix sockets;
			// only this process's connections are polls.
			if pid := peerPID(c); pid != os.Getpid() {
				cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
				t.Logf("relay: ignoring a connection from pid %d (%q)", pid, bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))
				r.foreign.Add(1)
				c.Close()
				continue
			}
			n := r.open.Add(1)
			r.total.Add(1)
			for m := r.max.Load(); n > m && !r.max.CompareAndSwap(m, n); m = r.max.Load() {
			}
			up, err := net.Dial(target.Network, target.Address)
			if err != nil {
				c.Close()
				r.open.Add(-1)
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			wg.Add(2)
			go func() {
				defer wg.Done()
				io.Copy(up, c)
				// The client closed: it no longer waits.
				r.open.Add(-1)
				up.Close()
				c.Close()
			}()
			go func() {
				defer wg.Done()
				io.Copy(c, up)
				c.Close()
			}()
		}
	}()
	return r
}

// TestPollerDoesNotPileUpOnASaturatedPool saturates a pool of one worker
// with two long requests and checks that the poller keeps one poll waiting,
// skips the ticks meanwhile, gets the late answer, and stops at once.
func TestPollerDoesNotPileUpOnASaturatedPool(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{StatusPath: "/fpm-status", MaxChildren: 1})
	root := testbed.PHPRoot(t)
	relay := startCountingRelay(t, fpmAddr(fpm))

	// Measure the idle latency first.
	ctx0, cancel0 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel0()
	idle, err := FetchStatus(ctx0, fpmAddr(fpm), "/fpm-status")
	if err != nil {
		t.Fatal(err)
	}

	goroutines := runtime.NumGoroutine()
	var reqs sync.WaitGroup
	sleep := func(s string) {
		reqs.Add(1)
		go func() {
			defer reqs.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if _, err := fcgiGet(ctx, fpmAddr(fpm), root, "/sleep.php", "s="+s); err != nil {
				t.Errorf("sleep.php: %v", err)
			}
		}()
	}
	sleep("2")
	time.Sleep(100 * time.Millisecond)
	sleep("2")
	time.Sleep(100 * time.Millisecond)

	p := &Poller{Addr: relay.addr, Path: "/fpm-status", Interval: 100 * time.Millisecond, Timeout: 300 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	start := time.Now()
	go func() { p.Run(ctx); close(done) }()

	eventually(t, 10*time.Second, "the late answer", func() bool { return p.Stats().Answers > 0 })
	late := time.Since(start)
	s := p.Stats()
	st, _, _ := p.Latest()
	t.Logf("idle pool: status in %v; saturated pool (1 worker, 2×2s requests): answer after %v; stats %+v; %s",
		idle.Latency, late.Round(time.Millisecond), s, st.Summary())
	if late < 3*time.Second {
		t.Errorf("the answer came after %v; the pool was not saturated", late)
	}
	// The next tick may have started another poll, which an idle pool
	// answers at once.
	if s.Polls > 2 || s.Late != 1 || s.TimedOut != 1 || s.Failures != 1 || s.Skipped < 20 {
		t.Errorf("stats %+v, want 1 poll that timed out and answered late, and many skipped ticks", s)
	}
	if !strings.Contains(s.LastError, "no answer within 300ms") {
		t.Errorf("last error %q", s.LastError)
	}
	if m := relay.max.Load(); m != 1 {
		t.Errorf("%d polls were in flight at once", m)
	}

	// Saturate it again and stop the poller while a poll waits.
	sleep("3")
	eventually(t, 5*time.Second, "a waiting poll", func() bool { s := p.Stats(); return s.InFlight && s.TimedOut >= 2 })
	cancel()
	stopped := time.Now()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return within 2s of the cancellation")
	}
	if d := time.Since(stopped); d > 200*time.Millisecond {
		t.Errorf("Run returned %v after the cancellation", d)
	}
	s = p.Stats()
	if s.InFlight || relay.max.Load() != 1 || s.Late != 1 {
		t.Errorf("after Run: stats %+v, max in flight %d", s, relay.max.Load())
	}
	if strings.Contains(s.LastError, "cancel") {
		t.Errorf("stopping the poller was taken for a failure: %q", s.LastError)
	}
	t.Logf("polls through the relay: %d; stats %+v", relay.total.Load(), s)
	reqs.Wait()
	eventually(t, 5*time.Second, "goroutines to settle", func() bool { return runtime.NumGoroutine() <= goroutines })
}

func TestPollerCountsFailures(t *testing.T) {
	dir := testbed.ShortTempDir(t)
	p := &Poller{Addr: fcgi.Addr{Network: "unix", Address: filepath.Join(dir, "none.sock")}, Path: "/fpm-status", Interval: 20 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	p.Run(ctx)
	s := p.Stats()
	if s.Polls < 3 || s.Failures != s.Polls || s.Answers != 0 || s.InFlight || !strings.Contains(s.LastError, "none.sock") {
		t.Errorf("stats %+v", s)
	}
	if _, _, ok := p.Latest(); ok {
		t.Error("Latest after failures only")
	}
	if _, err := FetchStatus(context.Background(), p.Addr, "fpm-status"); err == nil {
		t.Error("a relative path was accepted")
	}
}

// TestPollerGivesUpAfterMaxWait uses a listener that accepts and never
// answers.
func TestPollerGivesUpAfterMaxWait(t *testing.T) {
	addr := fcgi.Addr{Network: "unix", Address: filepath.Join(testbed.ShortTempDir(t), "mute.sock")}
	ln, err := net.Listen("unix", addr.Address)
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	defer conns.Wait()
	defer ln.Close()
	conns.Add(1)
	go func() {
		defer conns.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() { defer conns.Done(); io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	p := &Poller{Addr: addr, Path: "/fpm-status", Interval: 10 * time.Millisecond, Timeout: 20 * time.Millisecond, MaxWait: 100 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	start := time.Now()
	go func() { p.Run(ctx); close(done) }()
	eventually(t, 5*time.Second, "three polls to give up", func() bool { return strings.Contains(p.Stats().LastError, "giving up") && p.Stats().TimedOut >= 3 })
	cancel()
	<-done
	elapsed := time.Since(start)
	s := p.Stats()
	// Each poll waited MaxWait; the one in flight when Run ended was
	// abandoned, which is no failure.
	if s.Polls > int64(elapsed/(100*time.Millisecond))+1 || s.Polls-s.Failures > 1 || s.Failures != s.TimedOut || s.Skipped < 5 || s.Answers != 0 {
		t.Errorf("after %v: stats %+v", elapsed, s)
	}
}

func FuzzParseStatus(f *testing.F) {
	for _, name := range []string{"status/json.json", "status/full.json", "status/full-unescaped.json"} {
		f.Add(testdataFile(f, name))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		start := time.Now()
		st, err := ParseStatus(b)
		if d := time.Since(start); d > time.Second && len(b) < 1<<20 {
			t.Errorf("ParseStatus took %v for %d bytes", d, len(b))
		}
		if err != nil {
			if st != nil {
				t.Error("a Status with an error")
			}
			return
		}
		st.Busiest()
		st.Summary()
		for _, p := range st.Processes {
			for _, s := range []string{p.State, p.Method, p.RequestURI, p.Script, p.User} {
				if !utf8.ValidString(s) {
					t.Errorf("invalid UTF-8 %q", s)
				}
			}
		}
		if !utf8.ValidString(st.Pool) || !utf8.ValidString(st.ProcessManager) {
			t.Errorf("invalid UTF-8 in %+v", st)
		}
	})
}

// TestCaptureStatusAndSlowlog rewrites the captured files under
// testdata/status and testdata/slowlog from the installed php-fpm. It runs
// only with FCGISCOPE_CAPTURE=1.
func TestCaptureStatusAndSlowlog(t *testing.T) {
	if os.Getenv("FCGISCOPE_CAPTURE") != "1" {
		t.Skip("set FCGISCOPE_CAPTURE=1 to capture testdata from php-fpm")
	}
	fpm := testbed.StartFPM(t, testbed.FPMConfig{StatusPath: "/fpm-status", MaxChildren: 3, SlowlogTimeout: time.Second})
	root := testbed.PHPRoot(t)
	writeSlowScripts(t, root)
	sleepPHP, err := os.ReadFile(filepath.Join(root, "sleep.php"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, weirdScriptName), sleepPHP, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fpmAddr(fpm)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	get := func(query string) []byte {
		params := PageParams("/fpm-status", "json&full")
		for i := range params {
			switch params[i].Name {
			case "QUERY_STRING":
				params[i].Value = query
			case "REQUEST_URI":
				params[i].Value = "/fpm-status?" + query
			}
		}
		resp, err := fcgitest.Do(ctx, addr, &fcgitest.Request{Params: params})
		if err != nil {
			t.Fatal(err)
		}
		_, body := cgi.HeadEnd(resp.Stdout, 0)
		return resp.Stdout[body:]
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join("testdata", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote testdata/%s (%d bytes)", name, len(b))
	}
	write("status/json.json", get("json"))

	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(weirdUser+":pw"))
	weirdDone := make(chan struct{})
	go func() {
		defer close(weirdDone)
		if _, err := fcgiGet(ctx, addr, root, weirdScriptName, weirdQuery, "HTTP_AUTHORIZATION", auth); err != nil {
			t.Errorf("weird request: %v", err)
		}
	}()
	time.Sleep(700 * time.Millisecond)
	full := get("json&full")
	write("status/full.json", full)
	write("status/full-unescaped.json", unescapeStatusValues(full))
	<-weirdDone
	// The weird request was slow too; keep only the entries below.
	if err := os.Truncate(fpm.SlowLog, 0); err != nil {
		t.Fatal(err)
	}

	// The slow log: a sleeping script, a CPU-bound loop (no frames) and
	// a deep stack.
	var wg sync.WaitGroup
	for _, s := range []string{"sleep.php", "cpu.php", "deep.php"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(len(s)) * 10 * time.Millisecond)
			if _, err := fcgiGet(ctx, addr, root, "/"+s, "s=2"); err != nil {
				t.Errorf("%s: %v", s, err)
			}
		}()
	}
	wg.Wait()
	eventually(t, 5*time.Second, "the slow log", func() bool {
		b, _ := os.ReadFile(fpm.SlowLog)
		return strings.Count(string(b), "[pool www]") == 3
	})
	b, err := os.ReadFile(fpm.SlowLog)
	if err != nil {
		t.Fatal(err)
	}
	write("slowlog/php82.log", b)
}
