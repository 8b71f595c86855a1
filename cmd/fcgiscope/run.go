package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"

	"github.com/fcgiscope/fcgiscope/internal/cliflag"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	exitSIGINT  = 130
	exitSIGQUIT = 131
	exitSIGTERM = 143
)

// version and commit are set at link time (-ldflags "-X main.version=...").
var (
	version = "dev"
	commit  = ""
)

const usageText = `fcgiscope relays FastCGI between a web server and php-fpm and explains every failure.

Usage:
  fcgiscope [serve] [flags]   run the sidecar (the default)
  fcgiscope http [flags]      serve PHP over HTTP for local debugging (static files + php-fpm)
  fcgiscope doctor [flags]    check nginx and php-fpm configuration and endpoints before traffic does
  fcgiscope request [flags] /script.php
                              send one FastCGI request (like cgi-fcgi) and explain what happened
  fcgiscope bench [flags]     load a FastCGI server directly and validate every answer
  fcgiscope version           print the version

Run 'fcgiscope help COMMAND' (or 'fcgiscope COMMAND -h') for a command's flags.
`

// commands are the names run knows, for suggesting one to a typo.
var commands = []string{"serve", "http", "doctor", "request", "bench", "version", "help"}

// run is main without the exit, so that tests can call it; stdout and
// stderr are the process's.
func run(args []string) int { return runWith(args, os.Stdout, os.Stderr) }

// runWith runs the command args name, writing to stdout and stderr.
func runWith(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	switch {
	case len(args) > 0 && isHelpFlag(args[0]):
		cmd, args = "help", nil
	case len(args) > 0 && args[0] != "" && args[0][0] != '-':
		cmd, args = args[0], args[1:]
	}
	if cmd == "help" && len(args) > 0 {
		// "fcgiscope help doctor" is "fcgiscope doctor -h".
		if !slices.Contains(commands, args[0]) || args[0] == "help" {
			return unknownCommand(args[0], stderr)
		}
		cmd, args = args[0], []string{"-h"}
	}
	switch cmd {
	case "serve":
		leaveCPUsToPHP()
		ctx, stop := signalContext()
		defer stop()
		return serve(ctx, args, os.Environ(), stdout, stderr)
	case "request":
		ctx, stop := signalContext()
		defer stop()
		return requestMain(ctx, args, stdout, stderr)
	case "doctor":
		ctx, stop := signalContext()
		defer stop()
		return doctorMain(ctx, args, stdout, stderr)
	case "http":
		ctx, stop := signalContext()
		defer stop()
		return httpMain(ctx, args, os.Environ(), stdout, stderr)
	case "bench":
		ctx, stop := signalContext()
		defer stop()
		return benchMain(ctx, args, stdout, stderr)
	case "version":
		printVersion(stdout)
		return exitOK
	case "help":
		fmt.Fprint(stdout, usageText)
		return exitOK
	}
	return unknownCommand(cmd, stderr)
}

func isHelpFlag(s string) bool {
	return s == "-h" || s == "--help" || s == "-help"
}

// unknownCommand says, in one line, that name is no command, and which one
// may have been meant.
func unknownCommand(name string, stderr io.Writer) int {
	msg := fmt.Sprintf("fcgiscope: unknown command %q", name)
	if s := cliflag.Suggest(name, commands); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	} else {
		msg += "; the commands are " + strings.Join(commands, ", ") + " ('fcgiscope help' says what each does)"
	}
	fmt.Fprintln(stderr, msg)
	return exitUsage
}

func printVersion(w io.Writer) {
	c := commit
	if c == "" {
		if info, ok := debug.ReadBuildInfo(); ok {
			for _, s := range info.Settings {
				if s.Key == "vcs.revision" {
					c = s.Value
				}
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	fmt.Fprintf(w, "fcgiscope %s (commit %s, %s)\n", version, c, runtime.Version())
}

// signalContext returns a context that ends on the first SIGINT, SIGTERM or
// SIGQUIT, each a graceful stop: SIGQUIT is how nginx and php-fpm are told
// to finish what they serve and leave, and Go's own answer to it (a stack
// dump and exit) would fail every request in flight. The cause of the
// context names the signal.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	go func() {
		sig, ok := <-ch
		if !ok {
			return
		}
		cancel(&stopSignalError{sig})
		// A second signal stops at once, as people expect of Ctrl-C.
		if sig, ok := <-ch; ok {
			fmt.Fprintf(os.Stderr, "fcgiscope: second %v, stopping now\n", sig)
			os.Exit(exitCodeFor(sig))
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(ch)
		cancel(nil)
	}
}

type stopSignalError struct{ sig os.Signal }

func (e *stopSignalError) Error() string { return "received " + e.sig.String() }

func exitCodeFor(sig os.Signal) int {
	switch sig {
	case syscall.SIGINT:
		return exitSIGINT
	case syscall.SIGQUIT:
		return exitSIGQUIT
	}
	return exitSIGTERM
}

// exitCodeForContext maps how ctx ended to the exit code of a clean stop.
func exitCodeForContext(ctx context.Context) int {
	var se *stopSignalError
	if errors.As(context.Cause(ctx), &se) {
		return exitCodeFor(se.sig)
	}
	return exitOK
}

func isHelp(err error) bool { return errors.Is(err, flag.ErrHelp) }
