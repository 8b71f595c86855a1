package doctor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/nginxconf"
	"github.com/fcgiscope/fcgiscope/internal/phpfpm"
)

// defaultNginxConf is where Debian, Red Hat and nginx.org's packages keep
// nginx.conf.
const defaultNginxConf = "/etc/nginx/nginx.conf"

func (c *checkup) loadNginx(ctx context.Context) {
	d := c.d
	fsys := nginxconf.RootFS(d.Root)
	switch {
	case d.NginxConf != "":
		c.readNginxFiles(d.NginxConf, d.NginxConf, fsys)
		return
	case !d.Upstream.IsZero():
		c.notChecked("nginx configuration: --upstream checks that one address alone (give --nginx to check nginx too)")
		return
	case d.Root != "":
		c.readNginxFiles(defaultNginxConf, fsys.Path(defaultNginxConf), fsys)
		return
	}
	bin, err := d.lookPath("nginx")
	if err != nil {
		if _, serr := os.Stat(defaultNginxConf); serr != nil {
			c.notChecked("nginx configuration: nginx is not installed here and %s does not exist; give the file with --nginx", defaultNginxConf)
			return
		}
		c.notChecked("nginx -t: nginx is not installed here; read %s as it is", defaultNginxConf)
		c.readNginxFiles(defaultNginxConf, defaultNginxConf+" (nginx is not installed here)", fsys)
		return
	}
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, errOut, err := d.command(tctx, bin, "-T")
	if err != nil && os.Geteuid() != 0 && d.Command == nil {
		// As another user nginx -t fails on files only root may open
		// (the pid file, the logs), which says nothing of the config.
		c.notChecked("nginx -T: it needs root here (%s); read %s as it is instead", nginxMessages(errOut), defaultNginxConf)
		c.readNginxFiles(defaultNginxConf, defaultNginxConf, fsys)
		return
	}
	if err != nil {
		msg := nginxMessages(errOut)
		f := Finding{
			ID: "nginx_config_invalid", Severity: SeverityError,
			Title:  "nginx rejects its configuration",
			Detail: fmt.Sprintf("`%s -T` failed (%v): %s", bin, err, msg),
			Impact: "nginx refuses to start, and `nginx -s reload` keeps the old configuration: changes made since the last good reload are not in effect.",
			Fix:    "Fix what nginx names above, then run `nginx -t` until it says \"syntax is ok\" and reload.",
		}
		if m := nginxWhere.FindStringSubmatch(msg); m != nil {
			n, _ := strconv.Atoi(m[2])
			f.Nginx = []*Location{{File: m[1], Line: n}}
		}
		c.add(f)
		if _, serr := os.Stat(defaultNginxConf); serr == nil {
			c.readNginxFiles(defaultNginxConf, defaultNginxConf+" (nginx -T failed)", fsys)
		}
		return
	}
	main, files, err := nginxconf.SplitDump(out)
	if err != nil {
		c.notChecked("nginx configuration: reading the output of %s -T: %v", bin, err)
		return
	}
	dump := nginxconf.DumpFS(files)
	cfg, err := nginxconf.Read(bin+" -T", main, dump.Open, dump.Glob)
	if err != nil {
		c.notChecked("nginx configuration: %v", err)
		return
	}
	c.setNginx(cfg)
}

func (c *checkup) readNginxFiles(main, source string, fsys nginxconf.RootFS) {
	cfg, err := nginxconf.Read(source, main, fsys.Open, fsys.Glob)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			c.notChecked("nginx configuration: %s does not exist; give the file with --nginx", fsys.Path(main))
		} else {
			c.notChecked("nginx configuration: %v", err)
		}
		return
	}
	c.setNginx(cfg)
}

func (c *checkup) setNginx(cfg *nginxconf.Config) {
	c.ngx = cfg
	c.report.Nginx = cfg.Source
	c.report.NginxFiles = cfg.Files
	for _, p := range cfg.Problems {
		c.notChecked("nginx configuration: %s (that part was skipped)", p)
	}
}

// nginxWhere finds the file and line in nginx's "[emerg] ... in FILE:LINE".
var nginxWhere = regexp.MustCompile(` in (/[^\s:]+):(\d+)`)

// nginxMessages returns nginx's own error lines, without the "syntax is
// ok" noise.
func nginxMessages(stderr []byte) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(stderr)), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return "(nginx printed nothing)"
	}
	return strings.Join(lines, " / ")
}

// fpmConfPatterns are where php-fpm.conf is looked for under Root.
var fpmConfPatterns = []string{"/etc/php/*/fpm/php-fpm.conf", "/etc/php-fpm.conf", "/usr/local/etc/php-fpm.conf", "/etc/php[0-9]*/php-fpm.conf"}

func (c *checkup) loadFPM() {
	d := c.d
	var conf *fpm.Config
	var err error
	switch {
	case d.FPMConf != "":
		conf, err = fpm.LoadOptions(d.FPMConf, fpm.Options{Root: d.Root})
	case d.Root != "":
		err = fmt.Errorf("no php-fpm configuration under %s (looked for %s)", d.Root, strings.Join(fpmConfPatterns, ", "))
		for _, pat := range fpmConfPatterns {
			m, _ := nginxconf.RootFS(d.Root).Glob(pat)
			if len(m) > 0 {
				conf, err = fpm.LoadOptions(m[len(m)-1], fpm.Options{Root: d.Root})
				break
			}
		}
	default:
		conf, err = fpm.Discover(nil)
	}
	if err != nil {
		c.notChecked("%v; give it with --fpm", err)
		return
	}
	c.fpm = conf
	c.report.FPM = conf.Path
	c.report.FPMFiles = conf.Files
	c.ini = readPHPIni(nginxconf.RootFS(d.Root), filepath.Dir(conf.Path))
	if c.ini.maxExecutionLoc.Line == 0 && c.ini.memoryLoc.Line == 0 && d.Root == "" {
		// No php.ini beside the configuration: the workers read the one
		// their binary was built for, /etc/php/8.2/fpm/ for php-fpm8.2.
		if bin, err := c.fpmBinary(); err == nil {
			if major, minor, ok := phpfpm.Version(bin); ok {
				c.ini = readPHPIni(nginxconf.RootFS(""), fmt.Sprintf("/etc/php/%d.%d/fpm", major, minor))
			}
		}
	}
	for _, w := range conf.Warnings {
		sev := SeverityWarning
		impact := "php-fpm reads this differently from what it looks like."
		if strings.HasSuffix(w, "(php-fpm refuses to start)") {
			sev = SeverityError
			impact = "php-fpm refuses to start with this configuration: every PHP request gets 502 once it is restarted."
		}
		file, msg := splitWhere(w)
		f := Finding{ID: "fpm_config_warning", Severity: sev, Title: "php-fpm configuration: " + msg, Impact: impact,
			Fix: "Change the line named; php-fpm -t checks the result."}
		if file != nil {
			f.FPM = []*Location{file}
		}
		c.add(f)
	}
}

// splitWhere splits "file:line: message" as package fpm writes warnings.
func splitWhere(w string) (*Location, string) {
	parts := strings.SplitN(w, ": ", 2)
	if len(parts) != 2 {
		return nil, w
	}
	i := strings.LastIndexByte(parts[0], ':')
	if i < 0 {
		return nil, w
	}
	n, err := strconv.Atoi(parts[0][i+1:])
	if err != nil {
		return nil, w
	}
	return &Location{File: parts[0][:i], Line: n}, parts[1]
}

// phpIni holds the php.ini values the checks compare against, with where
// they are set.
type phpIni struct {
	maxExecution    time.Duration
	maxExecutionLoc *Location
	memoryLimit     string
	memoryLoc       *Location
}

// readPHPIni reads max_execution_time and memory_limit from the php.ini in
// dir (the directory of php-fpm.conf) and from the conf.d directory beside
// it, the last value winning as PHP does. Missing files leave PHP's
// built-in defaults: 30 seconds and 128M.
func readPHPIni(fsys nginxconf.RootFS, dir string) *phpIni {
	ini := &phpIni{maxExecution: 30 * time.Second, memoryLimit: "128M",
		maxExecutionLoc: &Location{File: "PHP's built-in default", Text: "max_execution_time = 30"},
		memoryLoc:       &Location{File: "PHP's built-in default", Text: "memory_limit = 128M"}}
	files := []string{filepath.Join(dir, "php.ini")}
	if filepath.Base(dir) == "etc" { // /usr/local/etc/php-fpm.conf: the Docker image
		files = []string{filepath.Join(dir, "php", "php.ini")}
		more, _ := fsys.Glob(filepath.Join(dir, "php", "conf.d", "*.ini"))
		files = append(files, more...)
	} else {
		more, _ := fsys.Glob(filepath.Join(dir, "conf.d", "*.ini"))
		files = append(files, more...)
	}
	for _, f := range files {
		b, err := os.ReadFile(fsys.Path(f))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		n := 0
		for sc.Scan() {
			n++
			line := strings.TrimSpace(sc.Text())
			if line == "" || line[0] == ';' || line[0] == '[' {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			k, v = strings.TrimSpace(k), strings.Trim(strings.TrimSpace(stripIniComment(v)), `"'`)
			switch k {
			case "max_execution_time":
				if s, err := strconv.Atoi(v); err == nil {
					ini.maxExecution = time.Duration(s) * time.Second
					ini.maxExecutionLoc = &Location{File: f, Line: n, Text: line}
				}
			case "memory_limit":
				ini.memoryLimit = v
				ini.memoryLoc = &Location{File: f, Line: n, Text: line}
			}
		}
	}
	return ini
}

func stripIniComment(v string) string {
	if i := strings.IndexByte(v, ';'); i >= 0 && !strings.ContainsAny(v[:i], `"'`) {
		return v[:i]
	}
	return v
}

// maxExecution returns the max_execution_time a pool's scripts get, and
// where it is set.
func (c *checkup) maxExecution(p *fpm.Pool) (time.Duration, *Location) {
	if p.MaxExecutionTime >= 0 {
		v := p.PHPValues["max_execution_time"]
		return p.MaxExecutionTime, &Location{File: v.File, Line: v.Line, Text: v.Key + " = " + v.Raw}
	}
	if c.ini == nil {
		return 30 * time.Second, &Location{File: "PHP's built-in default", Text: "max_execution_time = 30"}
	}
	return c.ini.maxExecution, c.ini.maxExecutionLoc
}

// memoryLimit returns the memory_limit of a pool's scripts in bytes (-1
// for none), and where it is set.
func (c *checkup) memoryLimit(p *fpm.Pool) (int64, *Location) {
	if p.MemoryLimit != "" {
		v := p.PHPValues["memory_limit"]
		return parseIniBytes(p.MemoryLimit), &Location{File: v.File, Line: v.Line, Text: v.Key + " = " + v.Raw}
	}
	if c.ini == nil {
		return 128 << 20, &Location{File: "PHP's built-in default", Text: "memory_limit = 128M"}
	}
	return parseIniBytes(c.ini.memoryLimit), c.ini.memoryLoc
}

var iniBytes = regexp.MustCompile(`^(-?\d+)\s*([kKmMgG]?)$`)

// parseIniBytes reads a php.ini size such as 128M; -1 means no limit, and
// so does a value PHP would not understand, as far as a check can tell.
func parseIniBytes(s string) int64 {
	m := iniBytes.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return -1
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	if n < 0 {
		return -1
	}
	switch strings.ToLower(m[2]) {
	case "k":
		n <<= 10
	case "m":
		n <<= 20
	case "g":
		n <<= 30
	}
	return n
}
