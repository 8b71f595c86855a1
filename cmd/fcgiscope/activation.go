package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// inheritedListener returns the listening socket systemd (or another
// supervisor following the sd_listen_fds protocol) passed as file
// descriptor 3, or nil when none was passed to this process. Taking over a
// socket that stays open across restarts is what lets fcgiscope restart
// without refusing a single connection.
func inheritedListener(environ []string) (net.Listener, error) {
	get := func(key string) string {
		for _, kv := range environ {
			if v, ok := strings.CutPrefix(kv, key+"="); ok {
				return v
			}
		}
		return ""
	}
	fds := get("LISTEN_FDS")
	if fds == "" {
		return nil, nil
	}
	if pid, err := strconv.Atoi(get("LISTEN_PID")); err != nil || pid != os.Getpid() {
		// The variables were meant for another process, as the protocol
		// says when LISTEN_PID is not ours.
		return nil, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 1 {
		return nil, fmt.Errorf("LISTEN_FDS=%q: want the number of passed sockets", fds)
	}
	if n > 1 {
		return nil, fmt.Errorf("LISTEN_FDS=%d: fcgiscope listens on one socket; pass one (ListenStream= once in the .socket unit)", n)
	}
	f := os.NewFile(3, "listen-fd-3")
	ln, err := net.FileListener(f)
	f.Close() // FileListener holds its own duplicate
	if err != nil {
		return nil, fmt.Errorf("file descriptor 3 from LISTEN_FDS is not a listening socket: %w", err)
	}
	return ln, nil
}
