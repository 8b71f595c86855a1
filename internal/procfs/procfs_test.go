package procfs

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestChildrenAreFoundAndKilledByTheirID(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc here")
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()

	self, err := ReadStat(os.Getpid())
	if err != nil || self.Gone() || self.PPID != os.Getppid() || self.Start == "" {
		t.Fatalf("own stat %+v, %v", self, err)
	}
	var kid ID
	for _, k := range Children(os.Getpid()) {
		if k.PID == cmd.Process.Pid {
			kid = k
		}
	}
	if kid.Start == "" || !kid.Alive() || kid != IDOf(cmd.Process.Pid) {
		t.Fatalf("sleep (pid %d) not found alive among the children: %+v", cmd.Process.Pid, Children(os.Getpid()))
	}
	if stale := (ID{PID: kid.PID, Start: kid.Start + "0"}); stale.Alive() {
		t.Error("an ID with another start time counts as the running process")
	}
	if n := KillAll([]ID{kid}, 5*time.Second); n != 1 {
		t.Errorf("KillAll killed %d, want 1", n)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("sleep still runs after KillAll")
	}
	if kid.Alive() {
		t.Error("a reaped child still counts as alive")
	}
}
