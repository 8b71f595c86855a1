package diagnostics

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// fpmPath returns where fcgiscope finds path as php-fpm sees it: under the
// pool's chroot, and through /proc/PID/root when php-fpm's file system is
// visible from here. seen says which file system that is, for the
// explanation.
func (c *Classifier) fpmPath(path string) (at, seen string) {
	if c.pool() != nil && c.pool().Chroot != "" {
		path = filepath.Join(c.pool().Chroot, path)
	}
	if c.FPMRoot != nil {
		if root := c.FPMRoot(); root != "" {
			return filepath.Join(root, path), "php-fpm's file system (seen through " + root + ")"
		}
	}
	return path, "the file system as fcgiscope sees it (php-fpm's own is not visible from here, and may differ)"
}

// deepest returns the longest leading part of path that exists at base.
func deepest(path string, exists func(string) bool) string {
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		if exists(p) || p == "/" || p == "." {
			return p
		}
	}
}

// scriptProblem names a script php-fpm could not find or would not run.
func (c *Classifier) scriptProblem(t *outcome.Trace, msgs []fpm.Message, d *Diagnosis) bool {
	said := func(marker string) bool {
		if bytes.Contains(t.Stderr, []byte(marker)) {
			return true
		}
		_, ok := find(msgs, marker)
		return ok
	}
	switch {
	case said("Primary script unknown"):
		c.scriptNotFound(t, msgs, d)
	case said("has been denied (see security.limit_extensions)"):
		d.Cause = CauseScriptDenied
		d.Detail = fmt.Sprintf("php-fpm refused to run %q: its extension is not in security.limit_extensions.", t.Script)
		d.Hints = []string{"Send only .php files to php-fpm (location ~ \\.php$), or add the extension to security.limit_extensions in the pool."}
	case said("Unable to open primary script"):
		d.Cause = CauseScriptDenied
		d.Detail = fmt.Sprintf("php-fpm could not open %q: %s", t.Script, firstLine(t.Stderr, "Unable to open primary script"))
		d.Hints = []string{"Give the pool's user (user = ... in the pool) read access to the script and execute access to every directory above it."}
	default:
		return false
	}
	return true
}

// scriptNotFound says which part of SCRIPT_FILENAME php-fpm is missing:
// the whole document root (nginx and php-fpm on different file systems),
// the file in a root that exists, a directory php-fpm's user may not
// search, or open_basedir.
func (c *Classifier) scriptNotFound(t *outcome.Trace, msgs []fpm.Message, d *Diagnosis) {
	d.Cause = CauseScriptNotFound
	ev := d.Evidence
	script, root := t.Script, strings.TrimRight(t.DocumentRoot, "/")
	if root != "" {
		ev["document_root"] = root
	}
	lead := fmt.Sprintf("php-fpm found no file at SCRIPT_FILENAME %q and answered 404 \"File not found.\".", script)
	if m, ok := find(msgs, "open_basedir restriction in effect"); ok {
		quote(d, m)
		_, basedir := c.phpSetting(t, "open_basedir")
		d.Detail = lead + " PHP's open_basedir keeps it from the file: " + m.Text + "."
		d.Hints = []string{fmt.Sprintf("Add the application's directory to open_basedir (%s), or serve it from a directory open_basedir allows.", basedir)}
		return
	}
	exists := func(p string) bool {
		at, _ := c.fpmPath(p)
		_, err := os.Stat(at)
		return err == nil
	}
	_, seen := c.fpmPath(script)
	ev["checked_in"] = seen
	rootWhere := c.front().RootWhere(root)
	if rootWhere != "" {
		rootWhere = ", from nginx's " + rootWhere + ","
	}
	switch {
	case script == "":
		d.Detail = "nginx sent no SCRIPT_FILENAME, and php-fpm answered 404 \"File not found.\"."
		d.Hints = []string{"Add fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name; to the location that passes to php-fpm (Debian's snippets/fastcgi-php.conf and fastcgi.conf have it, fastcgi_params does not)."}
	case root != "" && strings.HasPrefix(script, root+"/") && !exists(root):
		have := deepest(root, exists)
		ev["deepest_existing"] = have
		d.Detail = fmt.Sprintf("%s The whole document root %q%s is missing from %s; the deepest part of it that exists is %q. nginx has that directory and php-fpm does not: they run on different file systems (separate containers, or a volume mounted at another path).", lead, root, rootWhere, seen, have)
		d.Hints = []string{
			"Mount the application at the same path in nginx's and php-fpm's containers, or make SCRIPT_FILENAME name the path php-fpm sees: fastcgi_param SCRIPT_FILENAME /path/in/php-fpm$fastcgi_script_name;",
		}
	case !exists(script):
		have := deepest(script, exists)
		ev["deepest_existing"] = have
		rootSays := ""
		if root != "" && exists(root) {
			rootSays = fmt.Sprintf(" The document root %q exists, but the file does not;", root)
		}
		d.Detail = fmt.Sprintf("%s%s the deepest part of the path that exists in %s is %q.", lead, rootSays, seen, have)
		d.Hints = []string{
			"Check that the file is deployed where SCRIPT_FILENAME says, and let nginx answer for missing files itself: try_files $uri =404; (or $fastcgi_script_name =404) in the PHP location keeps them from php-fpm.",
		}
	default:
		d.Detail = lead + " " + c.whyNotSeen(script, seen)
		d.Hints = []string{"Give the pool's user (user = ... in the pool) execute permission on every directory above the script and read permission on it, or check the pool's chroot."}
	}
}

// whyNotSeen explains a script that exists here but php-fpm reported
// unknown: a directory its user may not search, or another file system.
func (c *Classifier) whyNotSeen(script, seen string) string {
	if c.pool() != nil && c.pool().User != "" {
		if u, err := user.Lookup(c.pool().User); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			gids, _ := u.GroupIds()
			for dir := filepath.Dir(script); ; dir = filepath.Dir(dir) {
				at, _ := c.fpmPath(dir)
				if fi, err := os.Stat(at); err == nil && !mayEnter(fi, uid, gids) {
					return fmt.Sprintf("The file exists, but the pool's user %q (pool %q%s) may not enter %q (mode %s): php-fpm cannot reach it.", c.pool().User, c.pool().Name, commaWhere(c.pool().Settings["user"].Where()), dir, fi.Mode().Perm())
				}
				if dir == "/" || dir == "." {
					break
				}
			}
		}
	}
	return fmt.Sprintf("The file exists in %s, so php-fpm looks in another one (a separate container, the pool's chroot) or was denied a directory on the way.", seen)
}

// commaWhere is at for a place inside parentheses already.
func commaWhere(where string) string {
	if where == "" {
		return ""
	}
	return ", " + where
}

// mayEnter reports whether uid with groups gids may search a directory.
func mayEnter(fi fs.FileInfo, uid int, gids []string) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || uid == 0 {
		return true
	}
	mode := fi.Mode().Perm()
	if int(st.Uid) == uid {
		return mode&0o100 != 0
	}
	for _, g := range gids {
		if g == strconv.Itoa(int(st.Gid)) {
			return mode&0o010 != 0
		}
	}
	return mode&0o001 != 0
}

var (
	// "... session.save_path is correct (/var/lib/php/sessions)"
	reParenPath = regexp.MustCompile(`\((/[^()]*)\)`)
	// ENOSPC and EDQUOT in PHP's words: strerror, or the errno number.
	diskFullMarkers = []string{"No space left on device", "errno=28", "Disk quota exceeded", "errno=122"}
	// Failed writes that a full disk is the likeliest reason for, when
	// the file system is in fact (nearly) full.
	shortWriteMarkers = []string{"wrote less bytes than requested", "Failed to write session data", "unable to create a temporary file", "Unable to create temporary file", "Failed to write file to disk"}
)

// diskFull names a request during which PHP could not write because a
// file system was full: sessions, uploads' temporary files,
// file_put_contents, opcache's file cache.
func (c *Classifier) diskFull(t *outcome.Trace, msgs []fpm.Message, d *Diagnosis) bool {
	m, sure := find(msgs, diskFullMarkers...)
	if !sure {
		var ok bool
		if m, ok = find(msgs, shortWriteMarkers...); !ok {
			return false
		}
	}
	ev := d.Evidence
	dir, setting := c.fullDir(t, msgs, m)
	var free, total int64
	var st syscall.Statfs_t
	statfsOK := false
	if dir != "" {
		at, _ := c.fpmPath(dir)
		if syscall.Statfs(at, &st) == nil {
			statfsOK = true
			free, total = int64(st.Bavail)*st.Bsize, int64(st.Blocks)*st.Bsize
		}
	}
	if !sure && (!statfsOK || free > max(64<<10, total/100)) {
		return false // a failed write, but not for want of space
	}
	quote(d, m)
	d.Cause = CauseDiskFull
	where := "a file system"
	if dir != "" {
		ev["directory"] = dir
		where = fmt.Sprintf("the file system that holds %s%s", dir, setting)
	}
	d.Detail = fmt.Sprintf("PHP could not write: %s is full. PHP's words: %q%s.", where, m.Text, at(m.Where()))
	if statfsOK {
		ev["free_bytes"] = strconv.FormatInt(free, 10)
		ev["total_bytes"] = strconv.FormatInt(total, 10)
		d.Detail += fmt.Sprintf(" It has %s free of %s.", size(free), size(total))
	}
	d.Detail += fmt.Sprintf(" The script went on and answered %d: what it meant to save is lost.", t.Status)
	d.Hints = []string{
		"Free space on that file system, or give it more (a larger volume, a larger tmpfs size=).",
		"PHP's session files pile up when nothing removes old ones: with session.gc_probability = 0 (Debian's default) a cron job (phpsessionclean) must, and a container has none.",
	}
	return true
}

// fullDir finds the directory PHP failed to write to: the one the message
// names, else the setting the message is about.
func (c *Classifier) fullDir(t *outcome.Trace, msgs []fpm.Message, m fpm.Message) (dir, setting string) {
	for _, msg := range append([]fpm.Message{m}, msgs...) {
		if p := reParenPath.FindAllStringSubmatch(msg.Text, -1); p != nil {
			return p[len(p)-1][1], ""
		}
	}
	name := ""
	switch text := strings.ToLower(m.Text); {
	case strings.Contains(text, "session"):
		name = "session.save_path"
	case strings.Contains(text, "temporary file") || strings.Contains(text, "upload"):
		name = "upload_tmp_dir"
	default:
		return "", ""
	}
	v, describe := c.phpSetting(t, name)
	if i := strings.LastIndexByte(v, ';'); i >= 0 {
		v = v[i+1:] // session.save_path = "N;MODE;/path"
	}
	if v == "" {
		v = "/tmp"
		describe += ", so PHP uses the system's temporary directory: $TMPDIR, else /tmp"
	}
	return v, " (" + describe + ")"
}

// firstLine returns the line of b that contains marker, trimmed.
func firstLine(b []byte, marker string) string {
	i := bytes.Index(b, []byte(marker))
	if i < 0 {
		return ""
	}
	line := b[i:]
	if j := bytes.IndexAny(line, "\r\n"); j >= 0 {
		line = line[:j]
	}
	return strings.TrimSpace(string(line))
}
