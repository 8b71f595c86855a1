package doctor

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/nginxconf"
)

// poolsOf returns the pools a pass sends requests to. When no target
// matches a pool and the configuration has exactly one, that one is meant:
// a broken fastcgi_pass is reported on its own, and the pool's timeouts
// still matter once it is fixed.
func (c *checkup) poolsOf(p *nginxconf.Pass) (pools []*fpm.Pool, assumed bool) {
	for _, t := range c.targets {
		if t.pool == nil {
			continue
		}
		for _, tp := range t.passes {
			if tp == p && !containsPool(pools, t.pool) {
				pools = append(pools, t.pool)
			}
		}
	}
	if len(pools) == 0 && c.fpm != nil && len(c.fpm.Pools) == 1 {
		return c.fpm.Pools, true
	}
	return pools, false
}

func containsPool(ps []*fpm.Pool, p *fpm.Pool) bool {
	for _, x := range ps {
		if x == p {
			return true
		}
	}
	return false
}

// checkScriptFilename finds PHP locations that do not send SCRIPT_FILENAME,
// which php-fpm needs to find the script.
func (c *checkup) checkScriptFilename() {
	if c.ngx == nil {
		return
	}
	seen := map[*nginxconf.Directive]bool{}
	for _, p := range c.ngx.Passes {
		if seen[p.Location] {
			continue
		}
		seen[p.Location] = true
		if _, ok := p.Param("SCRIPT_FILENAME"); ok {
			continue
		}
		f := Finding{ID: "script_filename", Severity: SeverityError,
			Title:  fmt.Sprintf("%s sends no SCRIPT_FILENAME to php-fpm", describeLocation(p.Location)),
			Nginx:  []*Location{locOf(p.Location), locOf(p.Dir)},
			Impact: "php-fpm cannot tell which script to run: it answers every request with 404 \"File not found.\" and logs \"Primary script unknown\" (fcgiscope: script_not_found).",
			Cause:  "script_not_found",
		}
		var include *nginxconf.Directive
		files := map[string]bool{}
		for _, fp := range p.Params {
			files[fp.Dir.File] = true
			if fp.Dir.Via != nil && filepath.Base(fp.Dir.File) == "fastcgi_params" {
				include = fp.Dir.Via
			}
		}
		switch {
		case p.ParamsAt == nil:
			f.Detail = "No fastcgi_param reaches this location, from itself or from the server and http blocks around it."
			f.Fix = fmt.Sprintf("In the location at %s:%d add\n    include fastcgi.conf;\n(it sets SCRIPT_FILENAME $document_root$fastcgi_script_name and the other CGI params), or on Debian\n    include snippets/fastcgi-php.conf;", p.Location.File, p.Location.Line)
		case include != nil:
			f.Detail = fmt.Sprintf("The fastcgi_param lines in effect come from %s, included at %s:%d. Debian's fastcgi_params does not set SCRIPT_FILENAME; fastcgi.conf is the same list with it.", include.Arg(0), include.File, include.Line)
			f.Nginx = append(f.Nginx, locOf(include))
			f.Fix = fmt.Sprintf("In %s:%d replace\n    include %s;\nwith\n    include fastcgi.conf;\nor add after it\n    fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;", include.File, include.Line, include.Arg(0))
		default:
			f.Detail = fmt.Sprintf("The fastcgi_param lines in effect are those of %s (%s:%d); none of them is SCRIPT_FILENAME.", describeLocation(p.ParamsAt), p.ParamsAt.File, p.ParamsAt.Line)
			f.Fix = fmt.Sprintf("In the block at %s:%d, next to its other fastcgi_param lines (a location with a fastcgi_param of its own inherits none), add\n    fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;", p.ParamsAt.File, p.ParamsAt.Line)
		}
		c.add(f)
	}
}

func describeLocation(d *nginxconf.Directive) string {
	if d == nil {
		return "the block"
	}
	s := d.Name
	if len(d.Args) > 0 {
		s += " " + strings.Join(d.Args, " ")
	}
	return s
}

// heartbeatSlack is how late php-fpm's request_terminate_timeout kill can
// come: php-fpm looks for overdue requests on a heartbeat of a third of
// the smallest timeout, and scheduling adds a little.
func heartbeatSlack(limit time.Duration) time.Duration {
	return limit/3 + time.Second
}

// checkTimeouts compares nginx's fastcgi_read_timeout with php-fpm's
// request_terminate_timeout and PHP's max_execution_time, and says which
// fires first and what the client then sees.
func (c *checkup) checkTimeouts() {
	if c.ngx == nil || c.fpm == nil {
		return
	}
	seen := map[string]bool{}
	for _, p := range c.ngx.Passes {
		pools, _ := c.poolsOf(p)
		for _, pool := range pools {
			key := fmt.Sprintf("%p/%v/%p", pool, p.ReadTimeout.Value, p.ReadTimeout.Dir)
			if seen[key] {
				continue
			}
			seen[key] = true
			c.timeoutOrder(p, pool)
		}
	}
}

func (c *checkup) timeoutOrder(p *nginxconf.Pass, pool *fpm.Pool) {
	nginxT := p.ReadTimeout.Value
	readLoc := locOf(p.ReadTimeout.Dir)
	if readLoc == nil {
		readLoc = &Location{File: p.Dir.File, Line: p.Dir.Line, Text: fmt.Sprintf("fastcgi_read_timeout %s; (nginx's default, set nowhere)", fmtDur(nginxT))}
	}
	term := pool.RequestTerminateTimeout
	termSetting := pool.Settings["request_terminate_timeout"]
	maxExec, maxLoc := c.maxExecution(pool)
	f := Finding{ID: "timeout_order", Nginx: []*Location{readLoc}}
	f.FPM = compactLocs([]*Location{settingLoc(termSetting), maxLoc})
	if !termSetting.IsSet() {
		f.FPM = compactLocs([]*Location{{File: pool.File, Line: pool.Line, Text: fmt.Sprintf("[%s] (request_terminate_timeout not set: off)", pool.Name)}, maxLoc})
	}
	suggest := (nginxT - time.Second) * 3 / 4
	suggest = suggest.Truncate(time.Second)
	if suggest < time.Second {
		suggest = time.Second
	}
	maxNote := ""
	switch {
	case maxExec <= 0:
		maxNote = " max_execution_time is 0: PHP itself never stops a script."
	case term > 0 && maxExec >= term:
		maxNote = fmt.Sprintf(" max_execution_time = %s never fires first: php-fpm kills the worker at %s before PHP can end the script with its own \"Maximum execution time exceeded\" error.", fmtDur(maxExec), fmtDur(term))
	case maxExec >= nginxT:
		maxNote = fmt.Sprintf(" max_execution_time = %s is not shorter than nginx's %s.", fmtDur(maxExec), fmtDur(nginxT))
	default:
		maxNote = fmt.Sprintf(" max_execution_time = %s counts CPU time only (on Linux): a script waiting on a database, an HTTP call or sleep() outlives it.", fmtDur(maxExec))
	}
	where := fmt.Sprintf("In pool %s (%s)", pool.Name, pool.File)
	if termSetting.IsSet() {
		where = fmt.Sprintf("In pool %s, at %s,", pool.Name, termSetting.Where())
	}
	held := fmt.Sprintf("its worker keeps running and holds one of pool %s's %d workers (pm.max_children)", pool.Name, pool.MaxChildren)
	switch {
	case term <= 0:
		f.Severity = SeverityWarning
		f.Title = fmt.Sprintf("nginx gives up on slow PHP requests after %s, and nothing stops them in php-fpm", fmtDur(nginxT))
		f.Detail = fmt.Sprintf("nginx waits %s for data from php-fpm (fastcgi_read_timeout); pool %s has no request_terminate_timeout.%s", fmtDur(nginxT), pool.Name, maxNote)
		f.Impact = fmt.Sprintf("A request that sends nothing for %s gets 504 Gateway Time-out, but %s until the script ends. A handful of stuck requests fill the pool; then every request waits, and gets 502 or 504.", fmtDur(nginxT), held)
		f.Fix = fmt.Sprintf("%s add\n    request_terminate_timeout = %s\nand restart php-fpm. php-fpm checks it on a heartbeat of a third of the limit, so the kill comes by %s, before nginx's %s; the client then gets 502 and fcgiscope names it worker_timeout_killed.",
			where, fmtDur(suggest), fmtDur(suggest+heartbeatSlack(suggest)), fmtDur(nginxT))
	case term+heartbeatSlack(term) >= nginxT:
		f.Severity = SeverityWarning
		if term >= nginxT {
			f.Title = fmt.Sprintf("nginx gives up (%s) before php-fpm stops the request (request_terminate_timeout %s)", fmtDur(nginxT), fmtDur(term))
		} else {
			f.Title = fmt.Sprintf("php-fpm's request_terminate_timeout (%s) can fire after nginx's fastcgi_read_timeout (%s)", fmtDur(term), fmtDur(nginxT))
		}
		f.Detail = fmt.Sprintf("nginx waits %s for data; php-fpm kills a request after %s, checked on a heartbeat of a third of that, so the kill lands between %s and %s.%s", fmtDur(nginxT), fmtDur(term), fmtDur(term), fmtDur(term+heartbeatSlack(term)), maxNote)
		f.Impact = fmt.Sprintf("A slow request gets 504 Gateway Time-out from nginx while %s for up to %s more.", held, fmtDur(term+heartbeatSlack(term)-nginxT))
		f.Fix = fmt.Sprintf("%s set\n    request_terminate_timeout = %s\nand restart php-fpm, or in %s raise nginx's limit:\n    fastcgi_read_timeout %s;",
			where, fmtDur(suggest), readLoc, fmtDur((term + heartbeatSlack(term) + time.Second).Truncate(time.Second)))
	default:
		f.Severity = SeverityInfo
		f.Title = fmt.Sprintf("Timeouts fire in a good order: php-fpm stops slow requests at %s, before nginx's %s", fmtDur(term), fmtDur(nginxT))
		f.Detail = fmt.Sprintf("php-fpm kills a request by %s at the latest; nginx would wait %s.%s", fmtDur(term+heartbeatSlack(term)), fmtDur(nginxT), maxNote)
		f.Impact = "A slow request ends with 502 Bad Gateway from nginx (\"upstream prematurely closed connection\"), its worker is freed, and fcgiscope names it worker_timeout_killed."
	}
	c.add(f)
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%time.Hour == 0:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	case d%time.Minute == 0 && d >= 10*time.Minute:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	case d%time.Second == 0:
		return strconv.Itoa(int(d/time.Second)) + "s"
	}
	return d.Round(100 * time.Millisecond).String()
}

// checkKeepalive finds keepalive settings that do nothing, and those that
// can pin every php-fpm worker to an idle nginx connection.
func (c *checkup) checkKeepalive() {
	if c.ngx == nil {
		return
	}
	seen := map[*nginxconf.Directive]bool{}
	for _, p := range c.ngx.Passes {
		u := c.ngx.Upstream(p.Dir.Arg(0))
		switch {
		case u != nil && u.Keepalive > 0 && !p.KeepConn.Value:
			if seen[p.Location] {
				continue
			}
			seen[p.Location] = true
			c.add(Finding{ID: "keepalive_pitfalls", Severity: SeverityInfo,
				Title:  fmt.Sprintf("keepalive %d in upstream %s does nothing for %s", u.Keepalive, u.Name, describeLocation(p.Location)),
				Detail: "nginx keeps FastCGI connections open only when the location also says fastcgi_keep_conn on; without it every request opens and closes a connection.",
				Nginx:  []*Location{locOf(u.KeepDir), locOf(p.Dir)},
				Fix:    fmt.Sprintf("If connection reuse is wanted, add in the location at %s:%d\n    fastcgi_keep_conn on;\n(mind the warning about pinned workers); otherwise drop keepalive.", p.Location.File, p.Location.Line)})
		case p.KeepConn.Value && (u == nil || u.Keepalive == 0):
			if seen[p.Location] {
				continue
			}
			seen[p.Location] = true
			c.add(Finding{ID: "keepalive_pitfalls", Severity: SeverityInfo,
				Title:  fmt.Sprintf("fastcgi_keep_conn on in %s does nothing without keepalive in an upstream block", describeLocation(p.Location)),
				Detail: "nginx keeps connections only in the cache an upstream block's keepalive directive sets up; with a plain address it closes them after each request.",
				Nginx:  []*Location{locOf(p.KeepConn.Dir), locOf(p.Dir)},
				Fix:    "Drop fastcgi_keep_conn, or pass to an upstream block with a keepalive directive."})
		case u != nil && u.Keepalive > 0 && p.KeepConn.Value:
			if seen[u.Dir] {
				continue
			}
			seen[u.Dir] = true
			pools, _ := c.poolsOf(p)
			for _, pool := range pools {
				pinned := u.Keepalive * c.ngx.WorkerProcesses
				if pool.MaxChildren <= 0 || pinned < pool.MaxChildren {
					continue
				}
				safe := pool.MaxChildren / (2 * c.ngx.WorkerProcesses)
				fix := fmt.Sprintf("In %s:%d lower it to\n    keepalive %d;\n(at most half of pm.max_children across the %d worker processes), or raise pm.max_children (%s).", u.KeepDir.File, u.KeepDir.Line, max(safe, 1), c.ngx.WorkerProcesses, pool.Settings["pm.max_children"].Where())
				if safe < 1 {
					fix = fmt.Sprintf("Drop keepalive from upstream %s (%s:%d) and fastcgi_keep_conn from the location, or raise pm.max_children (%s) well above %d.", u.Name, u.KeepDir.File, u.KeepDir.Line, pool.Settings["pm.max_children"].Where(), pinned)
				}
				c.add(Finding{ID: "keepalive_pitfalls", Severity: SeverityWarning,
					Title:  fmt.Sprintf("nginx can keep %d idle connections to pool %s, which has %d workers", pinned, pool.Name, pool.MaxChildren),
					Detail: fmt.Sprintf("keepalive %d per nginx worker process × %d worker processes = %d kept connections. A php-fpm worker serves one connection at a time and waits on a kept connection for its next request, so each idle kept connection holds a worker.", u.Keepalive, c.ngx.WorkerProcesses, pinned),
					Nginx:  compactLocs([]*Location{locOf(u.KeepDir), locOf(c.ngx.WorkerDir), locOf(p.KeepConn.Dir)}),
					FPM:    compactLocs([]*Location{settingLoc(pool.Settings["pm.max_children"])}),
					Impact: "Under load, idle connections of one nginx worker hold every php-fpm worker while requests on other connections wait in php-fpm's listen queue: they get 504 Gateway Time-out or 502 (fcgiscope: upstream_connect_timeout, upstream_backlog_full).",
					Fix:    fix})
			}
		}
	}
}

// memTotal returns the host's memory in bytes, from /proc/meminfo.
func memTotal() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no MemTotal in /proc/meminfo")
}

// checkCapacity compares what the pools may use at full load with the
// memory of the host.
func (c *checkup) checkCapacity() {
	if c.fpm == nil {
		return
	}
	if c.d.Root != "" {
		c.notChecked("pool_capacity: the configuration was read under %s, so this host's memory says nothing about it", c.d.Root)
		return
	}
	mem, err := memTotal()
	if err != nil {
		c.notChecked("pool_capacity: %v", err)
		return
	}
	var total int64
	var parts []string
	var fpmLocs []*Location
	var biggest *fpm.Pool
	var biggestLimit int64
	for _, p := range c.fpm.Pools {
		limit, loc := c.memoryLimit(p)
		if limit < 0 || p.MaxChildren <= 0 {
			continue
		}
		total += limit * int64(p.MaxChildren)
		parts = append(parts, fmt.Sprintf("pool %s: pm.max_children %d × memory_limit %s", p.Name, p.MaxChildren, fmtBytes(limit)))
		fpmLocs = append(fpmLocs, settingLoc(p.Settings["pm.max_children"]), loc)
		if biggest == nil || limit*int64(p.MaxChildren) > biggestLimit*int64(biggest.MaxChildren) {
			biggest, biggestLimit = p, limit
		}
	}
	if total <= mem || biggest == nil {
		return
	}
	fit := int(mem * 8 / 10 / biggestLimit)
	c.add(Finding{ID: "pool_capacity", Severity: SeverityWarning,
		Title:  fmt.Sprintf("At full load PHP may use %s; this host has %s", fmtBytes(total), fmtBytes(mem)),
		Detail: strings.Join(parts, "; ") + ". Each worker may grow to memory_limit.",
		FPM:    compactLocs(fpmLocs),
		Impact: "When busy workers run near memory_limit the kernel's OOM killer kills them (SIGKILL): their requests get 502 Bad Gateway, and fcgiscope names it worker_crashed.",
		Fix:    fmt.Sprintf("In pool %s (%s) lower pm.max_children to about %d (80%% of memory / memory_limit), or lower memory_limit for its scripts.", biggest.Name, biggest.File, max(fit, 1))})
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

// checkObservability says what a pool's settings hide when requests fail.
func (c *checkup) checkObservability() {
	if c.fpm == nil {
		return
	}
	for _, p := range c.fpm.Pools {
		header := &Location{File: p.File, Line: p.Line, Text: "[" + p.Name + "]"}
		if p.StatusPath == "" {
			c.add(Finding{ID: "observability", Severity: SeverityInfo,
				Title:  fmt.Sprintf("Pool %s has no pm.status_path", p.Name),
				Detail: "The status page shows active and idle workers, the listen queue and how often pm.max_children was reached.",
				FPM:    []*Location{header},
				Impact: "During a 502/504 storm there is no way to see whether the pool is saturated.",
				Fix:    fmt.Sprintf("In pool %s (%s) add\n    pm.status_path = /fpm-status\nand expose it to localhost only in nginx:\n    location = /fpm-status { allow 127.0.0.1; deny all; include fastcgi.conf; fastcgi_pass %s; }", p.Name, p.File, dialable(p.ListenAddr))})
		}
		if p.RequestSlowlogTimeout <= 0 || p.Slowlog == "" {
			sev := SeverityInfo
			lose := "Nothing records where slow requests spend their time."
			if p.RequestTerminateTimeout > 0 {
				sev = SeverityWarning
				lose = fmt.Sprintf("Requests killed at request_terminate_timeout (%s) leave no stack trace: there is no telling what they were waiting for.", fmtDur(p.RequestTerminateTimeout))
			}
			slow := 5 * time.Second
			if p.RequestTerminateTimeout > 0 {
				slow = min(slow, p.RequestTerminateTimeout/2)
			}
			c.add(Finding{ID: "observability", Severity: sev,
				Title:  fmt.Sprintf("Pool %s has no slow log", p.Name),
				Detail: "With request_slowlog_timeout and slowlog set, php-fpm writes the PHP stack of every request that runs longer.",
				FPM:    []*Location{header},
				Impact: lose,
				Fix:    fmt.Sprintf("In pool %s (%s) add\n    request_slowlog_timeout = %s\n    slowlog = /var/log/php-fpm.$pool.slow.log", p.Name, p.File, fmtDur(max(slow.Truncate(time.Second), time.Second)))})
		}
		if !p.CatchWorkersOutput {
			c.add(Finding{ID: "observability", Severity: SeverityInfo,
				Title:  fmt.Sprintf("Pool %s discards what its workers write to stdout and stderr", p.Name),
				Detail: "catch_workers_output is off, so messages PHP or an extension writes to stderr (with log_errors and no error_log, or just before a crash) go to /dev/null.",
				FPM:    []*Location{header},
				Impact: "A worker that dies leaves only \"exited on signal\" in php-fpm's log, without its last words.",
				Fix:    fmt.Sprintf("In pool %s (%s) add\n    catch_workers_output = yes\n    decorate_workers_output = no", p.Name, p.File)})
		}
	}
}

// diskDir is a directory whose file system must not fill up.
type diskDir struct {
	path, what, impact string
}

// checkDiskSpace looks at the file systems nginx and php-fpm write to
// while serving requests.
func (c *checkup) checkDiskSpace() {
	if c.d.Root != "" {
		c.notChecked("disk_space: the configuration was read under %s", c.d.Root)
		return
	}
	var dirs []diskDir
	if c.ngx != nil {
		temp := c.ngx.TempPath
		if temp == "" {
			temp = "/var/lib/nginx"
		}
		dirs = append(dirs, diskDir{temp, "nginx's fastcgi_temp_path", "nginx buffers responses larger than fastcgi_buffers to disk there; with it full, large responses fail and nginx logs \"No space left on device\""})
	}
	if c.fpm != nil {
		if l := c.fpm.ErrorLog; l != "" && l != "syslog" && filepath.IsAbs(l) {
			dirs = append(dirs, diskDir{filepath.Dir(l), "php-fpm's error log", "php-fpm cannot log why workers die"})
		}
		for _, p := range c.fpm.Pools {
			if p.ListenAddr.Network == "unix" {
				dirs = append(dirs, diskDir{filepath.Dir(p.ListenAddr.Address), "pool " + p.Name + "'s socket directory", "php-fpm cannot create its socket when it restarts: every PHP request gets 502"})
			}
		}
		dirs = append(dirs, diskDir{"/var/lib/php/sessions", "PHP's session directory", "PHP cannot save sessions: users are logged out and PHP warns \"No space left on device\""})
	}
	dirs = append(dirs, diskDir{os.TempDir(), "the temporary directory", "uploads and temporary files fail: PHP reports UPLOAD_ERR_CANT_WRITE"})
	seen := map[[2]int64]bool{}
	for _, d := range dirs {
		var st syscall.Statfs_t
		if err := syscall.Statfs(d.path, &st); err != nil {
			continue
		}
		key := [2]int64{int64(st.Fsid.X__val[0]), int64(st.Fsid.X__val[1])}
		if seen[key] {
			continue
		}
		seen[key] = true
		if f, ok := diskFinding(d, st.Bavail*uint64(st.Bsize), st.Blocks*uint64(st.Bsize), st.Ffree, st.Files); ok {
			c.add(f)
		}
	}
}

// diskFinding judges the free space and inodes of one file system: below
// 5% or 256 MiB is a warning, below 1% or 32 MiB an error.
func diskFinding(d diskDir, free, total, freeInodes, inodes uint64) (Finding, bool) {
	f := Finding{ID: "disk_space", Detail: fmt.Sprintf("%s is %s.", d.what, d.path), Impact: "When it fills up, " + d.impact + "."}
	switch {
	case total > 0 && (free < total/100 || free < 32<<20):
		f.Severity = SeverityError
	case total > 0 && (free < total/20 || free < 256<<20):
		f.Severity = SeverityWarning
	case inodes > 0 && freeInodes < inodes/100:
		f.Severity = SeverityWarning
		f.Title = fmt.Sprintf("The file system of %s has %d free inodes of %d", d.path, freeInodes, inodes)
		f.Fix = "Delete old files there (session files and nginx temp files pile up)."
		return f, true
	default:
		return f, false
	}
	f.Title = fmt.Sprintf("The file system of %s has %s free of %s", d.path, fmtBytes(int64(free)), fmtBytes(int64(total)))
	f.Fix = "Free space there (old logs, session files, nginx temp files), or give it a larger file system."
	return f, true
}

// maxChildrenLogWindow is how far back php-fpm's log is searched for
// "server reached pm.max_children": a week holds last Monday's peak
// without digging up problems long fixed.
const maxChildrenLogWindow = 7 * 24 * time.Hour

// maxChildrenLogTail bounds how much of php-fpm's log is read.
const maxChildrenLogTail = 4 << 20

// checkMaxChildrenLog reports the pools php-fpm's own log says ran out of
// workers lately: the warning php-fpm writes once per burst, which nobody
// reads until the 502s.
func (c *checkup) checkMaxChildrenLog() {
	if c.fpm == nil || c.fpm.ErrorLog == "" || !filepath.IsAbs(c.fpm.ErrorLog) {
		return
	}
	path := nginxconf.RootFS(c.d.Root).Path(c.fpm.ErrorLog)
	lines, err := tailLines(path, maxChildrenLogTail)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			c.notChecked("pm.max_children in php-fpm's log %s: %v", path, err)
		}
		return
	}
	type seen struct {
		count int
		last  fpm.Event
	}
	byPool := map[string]*seen{}
	since := time.Now().Add(-maxChildrenLogWindow)
	for _, l := range lines {
		ev, ok := fpm.ParseLogLine(l, time.Local)
		if !ok || ev.Kind != fpm.EventMaxChildren || ev.Time.Before(since) {
			continue
		}
		s := byPool[ev.Pool]
		if s == nil {
			s = &seen{}
			byPool[ev.Pool] = s
		}
		s.count++
		s.last = ev
	}
	for _, name := range slices.Sorted(maps.Keys(byPool)) {
		s := byPool[name]
		f := Finding{ID: "max_children_reached", Severity: SeverityWarning,
			Title:  fmt.Sprintf("Pool %s ran out of workers %s in the last 7 days: php-fpm's log says \"server reached pm.max_children\"", name, times(s.count)),
			Detail: fmt.Sprintf("The last time was %s: %q (in %s). Each time, new requests waited in the socket's backlog until a worker was free.", s.last.Time.Format(time.DateTime), s.last.Line, path),
			Impact: "Pages are slow during bursts, and requests fail with 502 when the backlog overflows or 504 when the wait outlasts nginx's fastcgi_read_timeout.",
			Cause:  "upstream_backlog_full",
		}
		fix := "Find what holds the workers (a slow log with request_slowlog_timeout shows where the time goes), then raise pm.max_children if memory allows (see pool_capacity)."
		if p := c.fpm.Pool(name); p != nil {
			if loc := settingLoc(p.Settings["pm.max_children"]); loc != nil {
				f.FPM = []*Location{loc}
				fix = fmt.Sprintf("Find what holds the workers (a slow log with request_slowlog_timeout shows where the time goes), then raise pm.max_children = %d at %s:%d if memory allows (see pool_capacity).", p.MaxChildren, loc.File, loc.Line)
			}
		}
		f.Fix = fix + " fcgiscope serve's FCGISCOPE_MAX_CONNS makes a burst wait in fcgiscope, counted and timed, instead of in php-fpm's backlog."
		c.add(f)
	}
}

// tailLines returns the lines of the last limit bytes of the file at path;
// a first line cut in the middle is dropped.
func tailLines(path string, limit int64) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(fi.Size()-limit, 0)
	b := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	lines := strings.Split(string(b), "\n")
	if off > 0 && len(lines) > 0 {
		lines = lines[1:]
	}
	return lines, nil
}

// times writes a count of occurrences: once, twice, 3 times.
func times(n int) string {
	switch n {
	case 1:
		return "once"
	case 2:
		return "twice"
	}
	return fmt.Sprintf("%d times", n)
}
