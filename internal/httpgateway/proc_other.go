//go:build !linux

package httpgateway

import (
	"os/exec"
	"syscall"
)

// setDeathSignal does nothing where the system has no parent-death signal:
// php-fpm then outlives a fcgiscope that is killed without stopping it.
func setDeathSignal(*exec.Cmd, syscall.Signal) {}
