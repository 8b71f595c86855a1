package phpfpm_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/phpfpm"
	"github.com/fcgiscope/fcgiscope/internal/testbed"

	"github.com/fcgiscope/fcgiscope/internal/procfs"
)

// TestMain lets the test binary stand in for a php-fpm that will not stop:
// with GATEWAY_FAKE_FPM=master it reads the listen path from the -y
// configuration, ignores SIGQUIT and SIGTERM, starts a worker that ignores
// them too, and accepts connections until it is killed.
func TestMain(m *testing.M) {
	switch os.Getenv("GATEWAY_FAKE_FPM") {
	case "master":
		fakeMaster()
	case "worker":
		signal.Ignore(syscall.SIGQUIT, syscall.SIGTERM)
		time.Sleep(time.Hour) // a bare select{} would be a deadlock to the runtime
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func fakeMaster() {
	signal.Ignore(syscall.SIGQUIT, syscall.SIGTERM)
	var conf string
	for i, a := range os.Args {
		if a == "-y" && i+1 < len(os.Args) {
			conf = os.Args[i+1]
		}
	}
	f, err := os.Open(conf)
	if err != nil {
		os.Exit(3)
	}
	var listen string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.TrimSpace(k) == "listen" {
			listen = strings.TrimSpace(v)
		}
	}
	worker := exec.Command(os.Args[0])
	worker.Env = append(os.Environ(), "GATEWAY_FAKE_FPM=worker")
	if err := worker.Start(); err != nil {
		os.Exit(4)
	}
	ln, err := net.Listen("unix", listen)
	if err != nil {
		os.Exit(5)
	}
	for {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
	}
}

func TestStopKillsAPHPFPMThatWillNotStopAndItsWorkers(t *testing.T) {
	php, err := phpfpm.Start(context.Background(), phpfpm.Config{
		Binary:      os.Args[0],
		MaxChildren: 1,
		Env:         append(os.Environ(), "GATEWAY_FAKE_FPM=master"),
	})
	if err != nil {
		t.Fatal(err)
	}
	var workers []int
	for deadline := time.Now().Add(5 * time.Second); len(workers) == 0 && time.Now().Before(deadline); {
		workers = php.Workers()
		time.Sleep(10 * time.Millisecond)
	}
	if len(workers) != 1 {
		t.Fatalf("workers %v, want the fake's one", workers)
	}
	if err := php.Stop(100 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Stop: %v, want a report that it had to kill", err)
	}
	for _, pid := range append([]int{php.Pid}, workers...) {
		if alive(pid) {
			t.Errorf("pid %d survived Stop", pid)
		}
	}
	if _, err := os.Stat(php.Dir); !os.IsNotExist(err) {
		t.Errorf("%s not removed: %v", php.Dir, err)
	}
	if err2 := php.Stop(time.Second); err2 == nil {
		t.Error("a second Stop should report the first one's result")
	}
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	st, err := procfs.ReadStat(pid)
	return err == nil && !st.Gone()
}

func TestStartReportsAnEarlyExit(t *testing.T) {
	_, err := phpfpm.Start(context.Background(), phpfpm.Config{Binary: "/bin/false", ReadyTimeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "exited before") || !strings.Contains(err.Error(), "accepted connections") {
		t.Errorf("got %v", err)
	}
}

func TestFindPrefersTheNewestVersion(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"php-fpm", "php-fpm7.4", "php-fpm98.10", "php-fpm98.9", "php-fpm-not", "php-fpm98.11.dpkg-dist"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "php-fpm99.0"), []byte("not executable"), 0o644)
	t.Setenv("PATH", dir)
	saved := phpfpm.Dirs
	phpfpm.Dirs = nil
	defer func() { phpfpm.Dirs = saved }()
	got, err := phpfpm.Find()
	if err != nil || got != filepath.Join(dir, "php-fpm98.10") {
		t.Errorf("Find() = %q, %v; want php-fpm98.10", got, err)
	}
	plain, empty := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(plain, "php-fpm"), []byte("#!/bin/sh\n"), 0o755)
	if got := phpfpm.FindIn([]string{empty, "", "/nonexistent", plain}); got != filepath.Join(plain, "php-fpm") {
		t.Errorf("FindIn = %q, want the unversioned php-fpm", got)
	}
	if got := phpfpm.FindIn([]string{empty}); got != "" {
		t.Errorf("FindIn in an empty directory = %q", got)
	}
	t.Setenv("PATH", empty)
	if _, err := phpfpm.Find(); !errors.Is(err, phpfpm.ErrNotFound) {
		t.Errorf("Find without php-fpm: %v", err)
	}
}

// TestDevelopmentRunsARealPool checks the configuration Start writes with
// the real php-fpm and the project's parser, which the classifier relies on.
func TestDevelopmentRunsARealPool(t *testing.T) {
	bin := testbed.RequireFPM(t)
	cfg := phpfpm.Development()
	cfg.Binary, cfg.MaxChildren = bin, 3
	php, err := phpfpm.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer php.Stop(5 * time.Second)
	conf, err := fpm.Load(php.ConfigPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(conf.Warnings) > 0 {
		t.Errorf("warnings: %v", conf.Warnings)
	}
	pool := conf.PoolFor(php.Addr)
	if pool == nil {
		t.Fatalf("no pool listens on %s", php.Addr)
	}
	if pool.PM != "static" || pool.MaxChildren != 3 || pool.RequestTerminateTimeout != 30*time.Second ||
		pool.RequestSlowlogTimeout != 5*time.Second || pool.Slowlog != php.SlowLog || !pool.CatchWorkersOutput {
		t.Errorf("pool %+v", pool)
	}
	if conf.ErrorLog != php.ErrorLog {
		t.Errorf("error_log %q, want %q", conf.ErrorLog, php.ErrorLog)
	}
	// Start returns once a static pool's workers all run.
	workers := php.Workers()
	if len(workers) != 3 {
		t.Errorf("workers %v, want 3", workers)
	}
	if err := php.Stop(5 * time.Second); err != nil {
		t.Errorf("Stop: %v", err)
	}
	for _, pid := range append([]int{php.Pid}, workers...) {
		if alive(pid) {
			t.Errorf("pid %d survived Stop", pid)
		}
	}
}
