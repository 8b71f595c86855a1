package main

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/hostprobe"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// listenProblem says in one sentence why listening on addr failed: the
// setting that chose the address (its variable and flag), who holds the
// address when it is taken, and what to do.
func listenProblem(err error, addr fcgi.Addr, envName string) string {
	setting := fmt.Sprintf("%s (--%s) is %s", envName, flagName(envName), addr)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		who := "another process"
		if h, herr := hostprobe.ListenerHolder(addr); herr == nil {
			who = h.String()
		}
		return fmt.Sprintf("cannot listen: %s, which %s already listens on. Stop it, or set %s to a free address", setting, who, envName)
	case errors.Is(err, syscall.EACCES) && addr.Network != "unix":
		return fmt.Sprintf("cannot listen: %s, a port below 1024, which needs root or CAP_NET_BIND_SERVICE. Choose a port above 1023 with %s", setting, envName)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Sprintf("cannot listen: %s, an address this host does not have. Use 127.0.0.1, 0.0.0.0 or one of the host's own addresses in %s", setting, envName)
	}
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "listening on "+addr.String()+": ")
	return fmt.Sprintf("cannot listen: %s: %s", setting, msg)
}
