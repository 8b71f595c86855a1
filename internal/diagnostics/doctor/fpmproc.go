package doctor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/phpfpm"
)

var (
	debianConf = regexp.MustCompile(`^/etc/php/(\d+\.\d+)/fpm/`)
	alpineConf = regexp.MustCompile(`^/etc/php(\d)(\d+)/`)
)

// debianVersion returns "8.2" for /etc/php/8.2/fpm/php-fpm.conf.
func debianVersion(conf string) string {
	if m := debianConf.FindStringSubmatch(conf); m != nil {
		return m[1]
	}
	return ""
}

// fpmBinaryName is the php-fpm binary that belongs to a configuration:
// Debian's /etc/php/8.2/fpm/ is php-fpm8.2's, Alpine's /etc/php82/ is
// php-fpm82's. Others are plain php-fpm.
func fpmBinaryName(conf string) string {
	if v := debianVersion(conf); v != "" {
		return "php-fpm" + v
	}
	if m := alpineConf.FindStringSubmatch(conf); m != nil {
		return "php-fpm" + m[1] + m[2]
	}
	return "php-fpm"
}

// masterTitle is how a php-fpm master names itself in ps:
// "php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)".
const masterTitle = "php-fpm: master process ("

// readMasters lists the php-fpm masters of this PID namespace from /proc.
func readMasters() ([]FPMMaster, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []FPMMaster
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		title := strings.TrimRight(strings.ReplaceAll(string(b), "\x00", " "), " ")
		rest, ok := strings.CutPrefix(title, masterTitle)
		if !ok {
			continue
		}
		conf := strings.TrimSuffix(rest, ")")
		if !filepath.IsAbs(conf) {
			// The title keeps the -y argument as given.
			if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err == nil {
				conf = filepath.Join(cwd, conf)
			}
		}
		out = append(out, FPMMaster{Pid: pid, Config: conf})
	}
	return out, nil
}

// runningMaster returns the master running with the configuration that
// was read, or nil; the error says the process list could not be read.
func (c *checkup) runningMaster() (*FPMMaster, error) {
	if c.fpm == nil {
		return nil, errors.New("no php-fpm configuration")
	}
	if !c.mastersRead {
		c.mastersRead = true
		if c.d.Masters != nil {
			c.masters, c.mastersErr = c.d.Masters()
		} else if c.d.Root != "" {
			c.mastersErr = errors.New("the configuration was read under --root")
		} else {
			c.masters, c.mastersErr = readMasters()
		}
	}
	if c.mastersErr != nil {
		return nil, c.mastersErr
	}
	want := canonical(c.fpm.Path)
	for i, m := range c.masters {
		if canonical(m.Config) == want {
			return &c.masters[i], nil
		}
	}
	return nil, nil
}

func canonical(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return filepath.Clean(p)
}

// checkFPMProcess asks php-fpm itself whether it accepts its configuration,
// and whether a master process runs with it.
func (c *checkup) checkFPMProcess(ctx context.Context) {
	if c.fpm == nil {
		return
	}
	if c.d.Root != "" && c.d.Command == nil {
		c.notChecked("php-fpm -t: the configuration was read under %s, which php-fpm cannot do", c.d.Root)
	} else {
		c.fpmTest(ctx)
	}

	running, err := c.runningMaster()
	if err != nil {
		c.notChecked("whether php-fpm runs: %v", err)
		return
	}
	if running != nil {
		return
	}
	var answering []string
	covered := false
	for _, p := range c.fpm.Pools {
		if c.covered[p] {
			covered = true
		}
		if pr := c.probes[dialable(p.ListenAddr)]; pr != nil && pr.OK {
			answering = append(answering, p.ListenAddr.String())
		}
	}
	if covered {
		return // a finding about an address already says it
	}
	var others []string
	for _, m := range c.masters {
		others = append(others, fmt.Sprintf("%s (pid %d)", m.Config, m.Pid))
	}
	if len(answering) > 0 {
		c.add(Finding{ID: "fpm_not_running", Severity: SeverityInfo,
			Title:  fmt.Sprintf("php-fpm answers on %s, but no master process with %s is visible here", strings.Join(answering, ", "), c.fpm.Path),
			Detail: "It runs in another PID namespace (a container), or was started with another configuration file that listens on the same address.",
			Fix:    "Nothing to do if that is expected; otherwise give the configuration php-fpm really uses with --fpm."})
		return
	}
	detail := fmt.Sprintf("No process is titled \"php-fpm: master process (%s)\".", c.fpm.Path)
	if len(others) > 0 {
		detail += " php-fpm runs with other configurations: " + strings.Join(others, ", ") + "; if one of them is the one in use, give it with --fpm."
	}
	f := Finding{ID: "fpm_not_running", Severity: SeverityError,
		Title:  "php-fpm is not running with " + c.fpm.Path,
		Detail: detail,
		FPM:    []*Location{{File: c.fpm.Path}},
		Impact: "Every PHP request gets 502 Bad Gateway from nginx.",
		Fix:    startFix(nil, serviceName(c.fpm), c.fpm)}
	if c.ngx != nil && !c.nginxUses() {
		f.Severity = SeverityWarning
		f.Impact = "Nothing fails now: nginx sends no requests to its pools. Once it does, they get 502 Bad Gateway."
	}
	c.add(f)
}

// fpmTest runs php-fpm -t on the configuration and reports what it
// rejects, in its own words.
func (c *checkup) fpmTest(ctx context.Context) {
	bin, err := c.fpmBinary()
	if err != nil {
		c.notChecked("php-fpm -t: %v", err)
		return
	}
	args := []string{"-t", "-y", c.fpm.Path}
	if os.Geteuid() == 0 {
		// As root php-fpm refuses to run pools without a user unless
		// told it may; the test is about the configuration, not that.
		args = append(args, "-R")
	}
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stdout, stderr, err := c.d.command(tctx, bin, args...)
	out := string(stdout) + string(stderr)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		c.notChecked("php-fpm -t: running %s: %v", bin, err)
		return
	}
	errs, warns, where := fpmTestMessages(out)
	cmdline := bin + " " + strings.Join(args, " ")
	c.settleParserRefusals(err == nil)
	if err != nil {
		msg := strings.Join(errs, " / ")
		if msg == "" {
			msg = strings.TrimSpace(out)
		}
		f := Finding{ID: "fpm_config_invalid", Severity: SeverityError,
			Title:  "php-fpm rejects its configuration",
			Detail: fmt.Sprintf("`%s` failed (%v): %s", cmdline, err, msg),
			Impact: "php-fpm does not start, or keeps its old configuration on reload: the next restart takes every PHP request down with 502.",
			Fix:    "Fix the line php-fpm names, then run " + cmdline + " until it says \"test is successful\"."}
		if where != nil {
			f.FPM = []*Location{where}
		} else {
			f.FPM = []*Location{{File: c.fpm.Path}}
		}
		c.add(f)
		return
	}
	for _, w := range warns {
		c.add(Finding{ID: "fpm_config_warning", Severity: SeverityWarning,
			Title:  "php-fpm -t warns: " + w,
			Detail: "`" + cmdline + "` accepts the configuration with this warning.",
			FPM:    []*Location{{File: c.fpm.Path}},
			Fix:    "Change the setting php-fpm names."})
	}
}

var (
	fpmLogPrefix = regexp.MustCompile(`^\[[^\]]*\d\d:\d\d:\d\d\] `)
	fpmWhere     = regexp.MustCompile(`\[(/[^\]:]+):(\d+)\]`)
)

// fpmTestMessages picks the ERROR and WARNING lines out of php-fpm -t's
// output, without timestamps, and the first file:line they name.
func fpmTestMessages(out string) (errs, warns []string, where *Location) {
	for _, line := range strings.Split(out, "\n") {
		line = fpmLogPrefix.ReplaceAllString(strings.TrimSpace(line), "")
		switch {
		case strings.HasPrefix(line, "ERROR: "):
			errs = append(errs, strings.TrimPrefix(line, "ERROR: "))
		case strings.HasPrefix(line, "WARNING: "):
			warns = append(warns, strings.TrimPrefix(line, "WARNING: "))
		default:
			continue
		}
		if m := fpmWhere.FindStringSubmatch(line); m != nil && where == nil {
			n, _ := strconv.Atoi(m[2])
			where = &Location{File: m[1], Line: n}
		}
	}
	return errs, warns, where
}

// nginxUses reports whether nginx sends FastCGI requests anywhere: to a
// pool, or to an address meant for one.
func (c *checkup) nginxUses() bool {
	for _, t := range c.targets {
		if len(t.refs) > 0 {
			return true
		}
	}
	return false
}

// fpmBinary finds the php-fpm that goes with the configuration: the one
// its path names (php-fpm8.2 for /etc/php/8.2/fpm/), else php-fpm, else the
// newest versioned php-fpm installed.
func (c *checkup) fpmBinary() (string, error) {
	if c.fpmBin != "" || c.fpmBinErr != nil {
		return c.fpmBin, c.fpmBinErr
	}
	name := fpmBinaryName(c.fpm.Path)
	bin, err := c.d.lookPath(name)
	if err != nil && name != "php-fpm" {
		bin, err = c.d.lookPath("php-fpm")
	}
	if err != nil && c.d.LookPath == nil {
		bin, err = phpfpm.Find()
	}
	if err != nil {
		err = fmt.Errorf("no php-fpm binary found (looked for %s, php-fpm and php-fpmX.Y on PATH and in /usr/sbin)", name)
	}
	c.fpmBin, c.fpmBinErr = bin, err
	return bin, err
}

// settleParserRefusals lets php-fpm -t overrule the parser's guesses about
// what php-fpm refuses: when -t failed its own message is the finding, and
// when it passed the configuration does start.
func (c *checkup) settleParserRefusals(accepted bool) {
	out := c.report.Findings[:0]
	for _, f := range c.report.Findings {
		if f.ID == "fpm_config_warning" && f.Severity == SeverityError {
			if !accepted {
				continue
			}
			f.Severity = SeverityWarning
			f.Impact = "php-fpm -t accepts it on this machine, but it looks like a mistake."
		}
		out = append(out, f)
	}
	c.report.Findings = out
}
