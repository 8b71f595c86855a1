package fpm_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/exchange"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// With pm.status_listen the status page comes from a listener of its own,
// answered while the pool's only worker is busy: the moment a saturated
// pool's status matters.
func TestStatusListenAnswersWhileEveryWorkerIsBusy(t *testing.T) {
	statusAddr := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	f := testbed.StartFPM(t, testbed.FPMConfig{MaxChildren: 1, StatusPath: "/fpm-status", Extra: "pm.status_listen = " + statusAddr + "\n"})
	conf, err := fpm.Load(f.ConfigPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	pool := conf.Pools[0]
	if pool.StatusListen.String() != statusAddr {
		t.Fatalf("StatusListen = %v, want %s", pool.StatusListen, statusAddr)
	}

	upstream, _ := fcgi.ParseAddr(f.Addr)
	busy := make(chan struct{})
	go func() {
		defer close(busy)
		var tr outcome.Trace
		exchange.Do(context.Background(), &exchange.Request{Upstream: upstream, Params: []fcgi.Pair{
			{Name: "SCRIPT_FILENAME", Value: filepath.Join(testbed.PHPRoot(t), "sleep.php")},
			{Name: "QUERY_STRING", Value: "s=3"}, {Name: "REQUEST_METHOD", Value: "GET"},
		}}, &tr)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := &fpm.Poller{Addr: pool.StatusListen, Path: pool.StatusPath, Interval: 100 * time.Millisecond}
	go p.Run(ctx)
	deadline := time.Now().Add(2500 * time.Millisecond)
	for {
		if st, _, ok := p.Latest(); ok && st.ActiveProcesses >= 1 && st.IdleProcesses == 0 {
			break // the page, with the one worker busy
		}
		if time.Now().After(deadline) {
			t.Fatal("no status page came from pm.status_listen while the pool's only worker was busy")
		}
		time.Sleep(50 * time.Millisecond)
	}
	<-busy
}
