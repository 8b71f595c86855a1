package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/cgi"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/exchange"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/nginxconf"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// sentRequest is one FastCGI request the doctor sent, as a Trace the
// classifier can explain, and the body of its response.
type sentRequest struct {
	trace *outcome.Trace
	body  []byte
	took  time.Duration
}

// maxBody bounds the response body the doctor keeps: it reads pings and
// probe pages, not downloads.
const maxBody = 64 << 10

// send sends one GET request with params to addr.
func (c *checkup) send(ctx context.Context, addr fcgi.Addr, params []fcgi.Pair) *sentRequest {
	var body bodyBuffer
	t := &outcome.Trace{}
	req := &exchange.Request{Upstream: addr, Params: params, Stdout: &body,
		ConnectTimeout: c.d.timeout(), ReadTimeout: c.d.timeout()}
	ctx, cancel := context.WithTimeout(ctx, 2*c.d.timeout())
	defer cancel()
	exchange.Do(ctx, req, t)
	return &sentRequest{trace: t, body: body.rest(), took: t.End.Sub(t.DialStart)}
}

// bodyBuffer keeps the start of a response and finds its body.
type bodyBuffer struct {
	head cgi.Scanner
	body []byte
}

func (b *bodyBuffer) Write(p []byte) (int, error) {
	if rest := b.head.Feed(p); len(rest) > 0 && len(b.body) < maxBody {
		b.body = append(b.body, rest[:min(len(rest), maxBody-len(b.body))]...)
	}
	return len(p), nil
}

func (b *bodyBuffer) rest() []byte { return b.body }

// pingPools sends each pool with ping.path its ping request: php-fpm
// answers it itself, so it proves a worker is free to take requests.
func (c *checkup) pingPools(ctx context.Context) {
	if c.fpm == nil {
		return
	}
	for _, p := range c.fpm.Pools {
		if p.PingPath == "" || p.ListenAddr.IsZero() {
			continue
		}
		addr := dialable(p.ListenAddr)
		pr := c.probes[addr]
		if pr == nil || !pr.OK {
			continue
		}
		x := c.send(ctx, addr, fpm.PageParams(p.PingPath, ""))
		pr.Ping = p.PingPath
		pr.PingMS = ms(x.took)
		t := x.trace
		ok := t.Err == nil && t.Status == 200 && strings.TrimSpace(string(x.body)) == p.PingResponse
		if ok {
			pr.PingResult = strings.TrimSpace(string(x.body))
		} else {
			f := Finding{ID: "ping_failed", Severity: SeverityWarning,
				Title: fmt.Sprintf("Pool %s does not answer its ping %s with %q", p.Name, p.PingPath, p.PingResponse),
				FPM:   []*Location{settingLoc(p.Settings["ping.path"])},
			}
			if t.Err != nil {
				d := (&diagnostics.Classifier{Pool: p}).Diagnose(t)
				f.Cause, f.Detail = d.Cause.ID, d.Detail
				pr.PingResult = d.Cause.ID
			} else {
				pr.PingResult = fmt.Sprintf("HTTP %d %q", t.Status, truncate(string(x.body), 80))
				f.Detail = fmt.Sprintf("It answered %s after %s.", pr.PingResult, fmtMS(x.took))
			}
			f.Impact = "Health checks that use the ping page mark php-fpm down."
			f.Fix = "Check php-fpm's error log; the ping is answered by php-fpm itself, so a failure means the pool cannot take requests."
			c.add(f)
		}
		c.syncProbe(addr)
	}
}

// syncProbe copies a probe's later results into the report.
func (c *checkup) syncProbe(addr fcgi.Addr) {
	s := addr.String()
	for i := range c.report.Probes {
		if c.report.Probes[i].Addr == s {
			c.report.Probes[i] = *c.probes[addr]
		}
	}
}

func fmtMS(d time.Duration) string { return fmt.Sprintf("%.1f ms", ms(d)) }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// probeScripts asks every PHP location for ProbeScript with the params
// nginx would send, and checks that php-fpm finds and runs it.
func (c *checkup) probeScripts(ctx context.Context) {
	script := c.d.ProbeScript
	if script == "" {
		return
	}
	u, err := url.Parse(script)
	if err != nil || !strings.HasPrefix(u.Path, "/") {
		c.notChecked("--probe-script %q: give a path such as /index.php", script)
		return
	}
	sent := 0
	if c.ngx == nil {
		// An address alone: no nginx to copy the params from, so the
		// script path is taken as php-fpm sees it.
		for _, t := range c.targets {
			if pr := c.probes[t.addr]; pr != nil && pr.OK {
				params := basicParams(u, u.Path, "", filepath.Dir(u.Path))
				c.judgeProbe(ctx, t.addr, nil, params, u.Path)
				sent++
			}
		}
	} else {
		seen := map[string]bool{}
		for _, p := range c.ngx.Passes {
			if !locationMatches(p.Location, u.Path) {
				continue
			}
			params, unknown := c.nginxParams(p, u)
			if msg := c.scriptAbsent(p, paramValue(params, "SCRIPT_FILENAME")); msg != "" {
				if !seen[msg] {
					seen[msg] = true
					c.notChecked("--probe-script %s: %s", script, msg)
				}
				sent++ // answered: nothing more to say about this location
				continue
			}
			for _, t := range c.targets {
				if !containsPass(t.passes, p) {
					continue
				}
				key := t.addr.String() + "\x00" + paramValue(params, "SCRIPT_FILENAME")
				if pr := c.probes[t.addr]; pr == nil || !pr.OK || seen[key] {
					continue
				}
				seen[key] = true
				if len(unknown) > 0 {
					c.notChecked("--probe-script through %s:%d: nginx variables %s were sent empty", p.Dir.File, p.Dir.Line, strings.Join(unknown, ", "))
				}
				c.judgeProbe(ctx, t.addr, p, params, u.Path)
				sent++
			}
		}
	}
	if sent == 0 {
		c.notChecked("--probe-script %s: no PHP location that matches it passes to an address that answers", script)
	}
}

// scriptAbsent returns why probing file through p would say nothing of
// php-fpm: the document root exists here but file is not in it, so the
// request fails before php-fpm could get it right. It returns "" when the
// file exists, or when the root is not on this file system (php-fpm may
// have its own, in another container).
func (c *checkup) scriptAbsent(p *nginxconf.Pass, file string) string {
	if file == "" || p.Root == "" {
		return ""
	}
	fsys := nginxconf.RootFS(c.d.Root)
	if fi, err := os.Stat(fsys.Path(p.Root)); err != nil || !fi.IsDir() {
		return ""
	}
	if _, err := os.Stat(fsys.Path(file)); !errors.Is(err, fs.ErrNotExist) {
		return ""
	}
	where := ""
	if p.RootDir != nil {
		where = fmt.Sprintf(" (root at %s:%d)", p.RootDir.File, p.RootDir.Line)
	}
	answer := `php-fpm would answer 404 "File not found."`
	if tf := tryFiles(p.Location); tf != nil {
		answer = fmt.Sprintf("nginx answers 404 itself without asking php-fpm (try_files at %s:%d)", tf.File, tf.Line)
	}
	return fmt.Sprintf("%s does not exist in nginx's document root %s%s, so %s. Give a script that exists, such as /index.php", file, p.Root, where, answer)
}

// tryFiles returns the try_files directive of a location, if it has one.
func tryFiles(loc *nginxconf.Directive) *nginxconf.Directive {
	if loc == nil {
		return nil
	}
	for _, d := range loc.Block {
		if d.Name == "try_files" {
			return d
		}
	}
	return nil
}

func containsPass(ps []*nginxconf.Pass, p *nginxconf.Pass) bool {
	for _, x := range ps {
		if x == p {
			return true
		}
	}
	return false
}

func paramValue(ps []fcgi.Pair, name string) string {
	for _, p := range ps {
		if p.Name == name {
			return p.Value
		}
	}
	return ""
}

func (c *checkup) judgeProbe(ctx context.Context, addr fcgi.Addr, p *nginxconf.Pass, params []fcgi.Pair, path string) {
	x := c.send(ctx, addr, params)
	t := x.trace
	var pool *fpm.Pool
	if c.fpm != nil {
		pool = c.fpm.PoolFor(addr)
	}
	d := (&diagnostics.Classifier{Pool: pool}).Diagnose(t)
	via := "sent directly, as php-fpm's own path"
	var nginxLocs []*Location
	if p != nil {
		via = fmt.Sprintf("built as %s (%s:%d) would send it", describeLocation(p.Location), p.Location.File, p.Location.Line)
		nginxLocs = []*Location{locOf(p.Location), locOf(p.Dir)}
	}
	result := fmt.Sprintf("%s -> HTTP %d in %s", path, t.Status, fmtMS(x.took))
	if d != nil {
		result = fmt.Sprintf("%s -> %s", path, d.Cause.ID)
	}
	if pr := c.probes[addr]; pr != nil {
		pr.Via = appendUnique(pr.Via, "probe "+result)
		c.syncProbe(addr)
	}
	if d == nil {
		return
	}
	f := Finding{ID: "probe_failed", Severity: SeverityError, Cause: d.Cause.ID, Nginx: nginxLocs,
		Title:  fmt.Sprintf("GET %s to %s fails: %s", path, addr, d.Cause.Title),
		Detail: fmt.Sprintf("The request was %s, with SCRIPT_FILENAME %q. %s", via, t.Script, d.Detail),
		Impact: "Real requests for this script fail the same way.",
		Fix:    strings.Join(d.Hints, " "),
	}
	if d.Cause == diagnostics.CauseScriptNotFound {
		f.ID = "script_filename"
		f.Title = fmt.Sprintf("php-fpm does not find %s: \"Primary script unknown\"", path)
		f.Impact = fmt.Sprintf("Requests for %s get 404 \"File not found.\" from php-fpm, although the script exists for nginx's try_files or for you.", path)
		if p != nil && p.RootDir != nil {
			f.Nginx = append(f.Nginx, locOf(p.RootDir))
			f.Fix = fmt.Sprintf("Make SCRIPT_FILENAME (%q) name the file as php-fpm sees it: check %s at %s:%d against where %s is for php-fpm's user, chroot (%s) or container.", t.Script, p.RootDir.Text(), p.RootDir.File, p.RootDir.Line, path, chrootOf(pool))
		} else if t.Script == "" {
			f.Fix = "Send SCRIPT_FILENAME: see the script_filename finding about this location."
		}
	}
	c.add(f)
}

func chrootOf(p *fpm.Pool) string {
	if p == nil || p.Chroot == "" {
		return "none"
	}
	return p.Chroot
}

func appendUnique(ss []string, s string) []string {
	for _, x := range ss {
		if x == s {
			return ss
		}
	}
	return append(ss, s)
}

func basicParams(u *url.URL, scriptFilename, pathInfo, root string) []fcgi.Pair {
	uri := u.EscapedPath()
	if u.RawQuery != "" {
		uri += "?" + u.RawQuery
	}
	ps := []fcgi.Pair{
		{Name: "SCRIPT_FILENAME", Value: scriptFilename},
		{Name: "QUERY_STRING", Value: u.RawQuery},
		{Name: "REQUEST_METHOD", Value: "GET"},
		{Name: "CONTENT_TYPE", Value: ""},
		{Name: "CONTENT_LENGTH", Value: ""},
		{Name: "SCRIPT_NAME", Value: u.Path},
		{Name: "REQUEST_URI", Value: uri},
		{Name: "DOCUMENT_URI", Value: u.Path},
		{Name: "DOCUMENT_ROOT", Value: root},
		{Name: "SERVER_PROTOCOL", Value: "HTTP/1.1"},
		{Name: "GATEWAY_INTERFACE", Value: "CGI/1.1"},
		{Name: "SERVER_SOFTWARE", Value: "fcgiscope-doctor"},
		{Name: "REMOTE_ADDR", Value: "127.0.0.1"},
		{Name: "SERVER_NAME", Value: "localhost"},
		{Name: "SERVER_PORT", Value: "80"},
		{Name: "REDIRECT_STATUS", Value: "200"},
	}
	if pathInfo != "" {
		ps = append(ps, fcgi.Pair{Name: "PATH_INFO", Value: pathInfo})
	}
	return ps
}

var nginxVar = regexp.MustCompile(`\$(\{[A-Za-z0-9_]+\}|[A-Za-z0-9_]+)`)

// nginxParams evaluates the fastcgi_param lines in effect at p for a GET of
// u, as nginx would: the variables a PHP location uses are worked out from
// the location's root and fastcgi_split_path_info; others are sent empty
// and returned.
func (c *checkup) nginxParams(p *nginxconf.Pass, u *url.URL) ([]fcgi.Pair, []string) {
	path := u.Path
	script, pathInfo := path, ""
	if p.Split != "" {
		if re, err := regexp.Compile(p.Split); err == nil {
			if m := re.FindStringSubmatch(path); len(m) >= 3 {
				script, pathInfo = m[1], m[2]
			}
		}
	}
	if strings.HasSuffix(script, "/") && p.Index != "" {
		script += p.Index
	}
	root := p.Root
	if !filepath.IsAbs(root) {
		root = filepath.Join("/usr/share/nginx", root) // Debian's --prefix
	}
	uri := u.EscapedPath()
	if u.RawQuery != "" {
		uri += "?" + u.RawQuery
	}
	host := "localhost"
	for _, n := range p.Names {
		if n != "_" && n != "" && !strings.ContainsAny(n, "*~") {
			host = n
			break
		}
	}
	realRoot := root
	if r, err := filepath.EvalSymlinks(nginxconf.RootFS(c.d.Root).Path(root)); err == nil && c.d.Root == "" {
		realRoot = r
	}
	vars := map[string]string{
		"document_root": root, "realpath_root": realRoot,
		"fastcgi_script_name": script, "fastcgi_path_info": pathInfo, "path_info": pathInfo,
		"uri": path, "document_uri": path, "request_uri": uri,
		"query_string": u.RawQuery, "args": u.RawQuery, "is_args": "",
		"request_method": "GET", "content_type": "", "content_length": "",
		"server_protocol": "HTTP/1.1", "scheme": "http", "https": "",
		"remote_addr": "127.0.0.1", "remote_port": "0", "remote_user": "",
		"server_addr": "127.0.0.1", "server_port": "80", "server_name": host, "host": host, "http_host": host,
		"nginx_version": "", "request_id": "fcgiscope-doctor", "request_filename": root + script,
		"http_user_agent": "fcgiscope-doctor",
	}
	if u.RawQuery != "" {
		vars["is_args"] = "?"
	}
	unknown := map[string]bool{}
	var out []fcgi.Pair
	for _, fp := range p.Params {
		v := nginxVar.ReplaceAllStringFunc(fp.Value, func(m string) string {
			name := strings.Trim(m[1:], "{}")
			if val, ok := vars[name]; ok {
				return val
			}
			unknown["$"+name] = true
			return ""
		})
		if v == "" && hasArg(fp.Dir, "if_not_empty") {
			continue
		}
		out = append(out, fcgi.Pair{Name: fp.Name, Value: v})
	}
	out = append(out, fcgi.Pair{Name: "HTTP_HOST", Value: host})
	var names []string
	for n := range unknown {
		names = append(names, n)
	}
	return out, names
}

// locationMatches reports whether a location (or the location around an
// if block) would take path. Regular expressions are read as Go's, which
// agree with PCRE on what PHP locations use; one Go cannot read counts as
// a match.
func locationMatches(loc *nginxconf.Directive, path string) bool {
	if loc == nil || loc.Name != "location" || len(loc.Args) == 0 {
		return true
	}
	mod, pat := "", loc.Args[0]
	if len(loc.Args) >= 2 {
		mod, pat = loc.Args[0], loc.Args[1]
	}
	switch mod {
	case "=":
		return path == pat
	case "~", "~*":
		if mod == "~*" {
			pat = "(?i)" + pat
		}
		re, err := regexp.Compile(pat)
		return err != nil || re.MatchString(path)
	case "^~", "":
		return strings.HasPrefix(path, pat)
	}
	return strings.HasPrefix(path, pat)
}
