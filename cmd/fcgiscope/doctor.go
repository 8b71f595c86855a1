package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/doctor"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

const doctorUsage = `Usage: fcgiscope doctor [flags]

Checks nginx's and php-fpm's configuration against each other and against
what listens on this host, and probes every FastCGI address nginx uses.
Each finding names the file and line on both sides, what happens at run
time if it is left, and the exact change that fixes it.

Exit status: 0 when nothing is an error, 1 when something is, 2 when the
doctor could not run (bad flags, no configuration found).

Flags:
`

// doctorMain runs `fcgiscope doctor`.
func doctorMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nginxConf := fs.String("nginx", "", "nginx.conf to check (default: the output of `nginx -T`, or /etc/nginx/nginx.conf when nginx is not installed)")
	fpmConf := fs.String("fpm", os.Getenv("FCGISCOPE_FPM_CONFIG"), "php-fpm.conf to check (default: FCGISCOPE_FPM_CONFIG, else the usual places)")
	upstream := fs.String("upstream", "", "check this one FastCGI address alone, as 127.0.0.1:9000 or unix:/run/php/php8.2-fpm.sock")
	probeScript := fs.String("probe-script", "", "a script that must exist, such as /index.php: each PHP location is asked for it with the params nginx would send")
	root := fs.String("root", "", "read the configuration files under this directory instead of /, as for a container image's files")
	format := fs.String("format", "text", "output format: text or json")
	timeout := fs.Duration("timeout", 2*time.Second, "how long each live probe may take")
	fs.Usage = func() {
		fmt.Fprint(stderr, doctorUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if isHelp(err) {
			return exitOK
		}
		return exitUsage
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "fcgiscope doctor: "+format+"\n", a...)
		return exitUsage
	}
	if fs.NArg() > 0 {
		return usage("takes no arguments, got %q; the inputs are flags such as --nginx and --fpm", fs.Args())
	}
	if *format != "text" && *format != "json" {
		return usage("--format %q: write text or json", *format)
	}
	if *timeout <= 0 {
		return usage("--timeout must be more than 0, as in 2s")
	}
	d := &doctor.Doctor{
		NginxConf:   *nginxConf,
		FPMConf:     *fpmConf,
		Root:        *root,
		ProbeScript: *probeScript,
		Timeout:     *timeout,
	}
	if *upstream != "" {
		a, err := fcgi.ParseAddr(*upstream)
		if err != nil {
			return usage("--upstream: %v", err)
		}
		d.Upstream = a
	}
	if *root != "" {
		if fi, err := os.Stat(*root); err != nil || !fi.IsDir() {
			return usage("--root %s is not a directory", *root)
		}
	}

	report, err := d.Check(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "fcgiscope doctor: could not check anything: %v\n", err)
		if report != nil && *format == "json" {
			report.WriteJSON(stdout)
		}
		return exitUsage
	}
	if *format == "json" {
		err = report.WriteJSON(stdout)
	} else {
		err = report.WriteText(stdout, isTerminal(stdout))
	}
	if err != nil {
		fmt.Fprintf(stderr, "fcgiscope doctor: writing the report: %v\n", err)
		return exitUsage
	}
	if report.Errors() > 0 {
		return exitFailure
	}
	return exitOK
}

// isTerminal reports whether w is a terminal that wants colours: not when
// the output goes to a file or a pipe, nor with NO_COLOR or TERM=dumb.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
