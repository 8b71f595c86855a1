package main

import (
	"os"
	"runtime"
)

// leaveCPUsToPHP runs the relay on a quarter of the CPUs the Go runtime would
// take (at least one), unless GOMAXPROCS is set. The relay's work per request
// is a small part of what nginx and php-fpm do, and on the few cores a
// sidecar shares with them, Go threads waking each other for every request
// cost more than they give: on 2 cores, one thread cut the relay's CPU time
// per request by about a fifth (make bench). One thread relays tens of
// thousands of requests per second, more than php-fpm serves on the cores
// left.
func leaveCPUsToPHP() {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	runtime.GOMAXPROCS(max(1, runtime.GOMAXPROCS(0)/4))
}
