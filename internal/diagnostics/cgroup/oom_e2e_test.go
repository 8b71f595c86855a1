package cgroup_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/cgroup"
	"github.com/fcgiscope/fcgiscope/internal/exchange"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// hog.php touches about 300 MB. With memory_limit = -1, PHP does not stop
// it, so in a 64 MB cgroup the kernel must.
const hog = `<?php
$s = str_repeat("x", 300 << 20);
echo strlen($s), "\n";
`

// TestOOMKilledWorkerIsSeenInTheCgroupCounter is the incident
// worker_oom_killed explains: a script allocates more than the memory cgroup
// of php-fpm allows, the kernel's OOM killer SIGKILLs the worker mid-request,
// the connection dies without END_REQUEST, and php-fpm logs only "exited on
// signal 9 (SIGKILL)". The cgroup's oom_kill counter, watched from php-fpm's
// master, tells that it was the OOM killer; the kernel log names the worker.
func TestOOMKilledWorkerIsSeenInTheCgroupCounter(t *testing.T) {
	// Before StartFPM, so that the cgroup is removed after php-fpm stops.
	dir, why := testbed.MemoryCgroup(t, 64<<20)
	if why != "" {
		t.Skipf("SKIPPING integration test: %s", why)
	}
	f := testbed.StartFPM(t, testbed.FPMConfig{
		PM:                 "static",
		MaxChildren:        1,
		CatchWorkersOutput: true,
		Extra:              "php_admin_value[memory_limit] = -1\n",
	})
	// The static worker is forked already: JoinCgroup moves it too.
	testbed.JoinCgroup(t, dir, f.Pid)
	workers := f.WorkerPIDs()
	if len(workers) != 1 {
		t.Fatalf("php-fpm has workers %v, want 1", workers)
	}

	w := &cgroup.Watch{Pid: func() int { return f.Pid }}
	before, err := w.Baseline()
	if err != nil {
		t.Fatal(err)
	}
	if before.Dir != dir || before.Limit != 64<<20 {
		t.Fatalf("Baseline read %+v, want the cgroup %s limited to 64 MiB", before, dir)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var klog cgroup.KernelLog
	klogErr := klog.Start(ctx)
	if klogErr != nil {
		t.Logf("not checking the kernel log: %v", klogErr)
	}

	root := testbed.ShortTempDir(t)
	script := filepath.Join(root, "hog.php")
	if err := os.WriteFile(script, []byte(hog), 0o644); err != nil {
		t.Fatal(err)
	}
	var tr outcome.Trace
	var stdout strings.Builder
	exchange.Do(ctx, &exchange.Request{
		Upstream: fcgi.Addr{Network: f.Network, Address: f.Address},
		Params: []fcgi.Pair{
			{Name: "GATEWAY_INTERFACE", Value: "CGI/1.1"},
			{Name: "SERVER_PROTOCOL", Value: "HTTP/1.1"},
			{Name: "REQUEST_METHOD", Value: "GET"},
			{Name: "REQUEST_URI", Value: "/hog.php"},
			{Name: "SCRIPT_NAME", Value: "/hog.php"},
			{Name: "SCRIPT_FILENAME", Value: script},
			{Name: "DOCUMENT_ROOT", Value: root},
		},
		Stdout: &stdout,
	}, &tr)
	if !errors.Is(tr.Err, outcome.ErrNoEndRequest) {
		t.Fatalf("the request ended with %v (status %d, stdout %q), want the connection closed without END_REQUEST",
			tr.Err, tr.Status, stdout.String())
	}

	n, after, err := w.Kills()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the cgroup after the request: %+v", after)
	if n < 1 {
		t.Errorf("Kills = %d after the worker was OOM killed, want >= 1 (before %+v, after %+v)", n, before, after)
	}
	if after.Peak < after.Limit*9/10 {
		t.Errorf("peak %d is far below the limit %d the worker hit", after.Peak, after.Limit)
	}
	if n, _, err := w.Kills(); err != nil || n != 0 {
		t.Errorf("Kills again = %d, %v; want 0", n, err)
	}

	want := "child " + strconv.Itoa(workers[0]) + " exited on signal 9 (SIGKILL)"
	waitFor(t, "php-fpm to log "+strconv.Quote(want), func() bool { return strings.Contains(f.ReadErrorLog(), want) })
	for _, line := range strings.Split(f.ReadErrorLog(), "\n") {
		if strings.Contains(line, want) {
			t.Logf("php-fpm: %s", line)
		}
	}
	if klogErr == nil {
		waitFor(t, "the kernel log to name the worker", func() bool { _, ok := klog.Killed(workers[0]); return ok })
		line, _ := klog.Killed(workers[0])
		t.Logf("kernel: %s", line)
	}
}

// waitFor waits up to 10 s for cond.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
