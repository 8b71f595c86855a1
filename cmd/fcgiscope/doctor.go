package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/cliflag"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/doctor"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

const doctorUsage = `Usage: fcgiscope doctor [flags]

Checks nginx's and php-fpm's configuration against each other and against
what listens on this host, and probes every FastCGI address nginx uses.
Each finding names the file and line on both sides, what happens at run
time if it is left, and the exact change that fixes it.

With --k8s it checks a Kubernetes manifest instead: the pod that runs
nginx, fcgiscope and php-fpm (a Pod, Deployment, StatefulSet or DaemonSet,
with the ConfigMaps that hold php-fpm's and nginx's configuration), decoded
strictly, each finding with the manifest's file and line. This host's
nginx and php-fpm are then checked only when --nginx, --fpm or --upstream
is given too.

Exit status: 0 when nothing is an error, 1 when something is, 2 when the
doctor could not run (bad flags, no configuration found).

Flags:
`

// doctorMain runs `fcgiscope doctor`.
func doctorMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nginxConf := fs.String("nginx", "", "nginx.conf to check (default: the output of `nginx -T`, or /etc/nginx/nginx.conf when nginx is not installed)")
	fpmConf := fs.String("fpm", "", "php-fpm.conf to check (default: FCGISCOPE_FPM_CONFIG, else the usual places)")
	upstream := fs.String("upstream", "", "check this one FastCGI address alone, as 127.0.0.1:9000 or unix:/run/php/php8.2-fpm.sock")
	probeScript := fs.String("probe-script", "", "a script that must exist, such as /index.php: each PHP location is asked for it with the params nginx would send")
	root := fs.String("root", "", "read the configuration files under this directory instead of /, as for a container image's files")
	format := fs.String("format", "text", "output format: text or json")
	timeout := fs.Duration("timeout", 2*time.Second, "how long each live probe may take")
	var k8s []string
	fs.Func("k8s", "check this Kubernetes manifest, or directory of manifests, as kubectl apply -f takes it; may be given more than once. Alone it checks only the manifests, not this host's nginx and php-fpm", func(v string) error {
		k8s = append(k8s, v)
		return nil
	})
	fs.Usage = func() {
		fmt.Fprint(stderr, doctorUsage)
		fs.PrintDefaults()
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "fcgiscope doctor: "+format+"\n", a...)
		return exitUsage
	}
	if err := cliflag.Parse(fs, args, cliflag.Options{Help: "'fcgiscope doctor -h' lists the flags"}); err != nil {
		if isHelp(err) {
			return exitOK
		}
		return usage("%v", err)
	}
	// Where each configuration was named, for a message about it.
	given := map[string]string{"nginx": "--nginx " + *nginxConf, "php-fpm": "--fpm " + *fpmConf}
	if *fpmConf == "" && len(k8s) == 0 {
		*fpmConf = os.Getenv("FCGISCOPE_FPM_CONFIG")
		given["php-fpm"] = "FCGISCOPE_FPM_CONFIG=" + *fpmConf
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
		K8s:         k8s,
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
	if ce := (*doctor.ConfigError)(nil); errors.As(err, &ce) {
		// A check that read nothing it was told to must not pass.
		if ce.Server == "k8s" {
			given["k8s"] = "--k8s " + ce.Path
		}
		return usage("%s: %s. %s", given[ce.Server], pathErrorText(ce.Err), configHint[ce.Server])
	}
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

// configHint says where to find each server's main configuration file.
var configHint = map[string]string{
	"nginx":   "Give nginx's main file, such as /etc/nginx/nginx.conf; `nginx -V` prints the one it was built with (--conf-path)",
	"php-fpm": "Give php-fpm's main file, such as /etc/php/8.2/fpm/php-fpm.conf; a running php-fpm names its own in `ps -eo args | grep 'php-fpm: master'`",
	"k8s":     "Give a manifest file or a directory of them, as for kubectl apply -f",
}

// pathErrorText is err without the path a *fs.PathError repeats.
func pathErrorText(err error) string {
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
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
