package testbed

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/procfs"
)

const (
	// readyTimeout bounds how long a started server may take to accept its
	// first connection.
	readyTimeout = 10 * time.Second
)

// childPIDs returns the pids of the current children of ppid.
func childPIDs(ppid int) []int {
	var pids []int
	for _, k := range procfs.Children(ppid) {
		pids = append(pids, k.PID)
	}
	return pids
}

// syncBuffer is a bytes.Buffer that may be written by the exec package's
// copying goroutine while a test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p to the buffer.
func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns a copy of everything written so far.
func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// openLog creates the file that receives a server's stdout and stderr.
func openLog(name string) (*os.File, error) {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", name, err)
	}
	return f, nil
}
