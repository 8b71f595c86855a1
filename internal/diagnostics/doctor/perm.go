package doctor

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/nginxconf"
)

// identity is a user as the kernel checks its permissions.
type identity struct {
	name   string
	uid    uint32
	gids   []uint32
	groups []string
}

// nginxIdentity returns who nginx's workers run as: the user directive, or
// nginx's default "nobody" with the group of the same name when it exists
// and nogroup otherwise, as nginx's build picks. The group, when not
// given, is the one named like the user, as nginx documents; workers also
// get the user's supplementary groups (initgroups).
func nginxIdentity(d *nginxconf.Directive) (identity, *Location, error) {
	name, group := "nobody", ""
	var loc *Location
	if d != nil {
		name, group = d.Arg(0), d.Arg(1)
		loc = locOf(d)
	}
	if group == "" {
		group = name
		if d == nil {
			if _, err := user.LookupGroup("nobody"); err != nil {
				group = "nogroup"
			}
		}
	}
	u, err := user.Lookup(name)
	if err != nil {
		return identity{}, loc, fmt.Errorf("nginx's user %q: %w", name, err)
	}
	id := identity{name: name}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	id.uid = uint32(uid)
	gids, _ := u.GroupIds()
	if g, err := user.LookupGroup(group); err == nil {
		gids = append([]string{g.Gid}, gids...)
	}
	for _, g := range gids {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil || slices.Contains(id.gids, uint32(n)) {
			continue
		}
		id.gids = append(id.gids, uint32(n))
		id.groups = append(id.groups, groupName(uint32(n)))
	}
	return id, loc, nil
}

func (id identity) String() string {
	return fmt.Sprintf("%s (groups %s)", id.name, strings.Join(id.groups, ","))
}

// canWrite reports whether id may write a file with this owner, group and
// mode, which is what connecting to a unix socket takes.
func (id identity) canWrite(uid, gid uint32, mode fs.FileMode) bool {
	return id.may(uid, gid, mode, 0o2)
}

func (id identity) may(uid, gid uint32, mode fs.FileMode, bit fs.FileMode) bool {
	switch {
	case id.uid == 0:
		return true
	case id.uid == uid:
		return mode&(bit<<6) != 0
	case slices.Contains(id.gids, gid):
		return mode&(bit<<3) != 0
	}
	return mode&bit != 0
}

// socketPerm is the owner, group and mode of a socket, as it is or as
// php-fpm will create it.
type socketPerm struct {
	uid, gid     uint32
	owner, group string
	mode         fs.FileMode
	predicted    bool
	// fromConfig lists the pool settings the prediction rests on.
	fromConfig []*Location
}

func (p socketPerm) String() string {
	return fmt.Sprintf("%s:%s mode %04o", p.owner, p.group, p.mode)
}

// predictSocket works out what php-fpm will create from the pool's
// listen.owner, listen.group and listen.mode: php-fpm chowns the socket to
// listen.owner and that user's primary group, then to listen.group; what
// is not set stays with the master's user, root when systemd starts it.
// The mode defaults to 0660.
func predictSocket(p *fpm.Pool) (socketPerm, error) {
	sp := socketPerm{owner: "root", group: "root", mode: 0o660, predicted: true}
	if p.ListenOwner != "" {
		u, err := user.Lookup(p.ListenOwner)
		if err != nil {
			return sp, fmt.Errorf("listen.owner = %s: %w", p.ListenOwner, err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		sp.uid, sp.gid = uint32(uid), uint32(gid)
		sp.owner, sp.group = u.Username, groupName(uint32(gid))
	}
	if p.ListenGroup != "" {
		g, err := user.LookupGroup(p.ListenGroup)
		if err != nil {
			return sp, fmt.Errorf("listen.group = %s: %w", p.ListenGroup, err)
		}
		gid, _ := strconv.ParseUint(g.Gid, 10, 32)
		sp.gid, sp.group = uint32(gid), g.Name
	}
	if p.ListenMode != "" {
		m, err := strconv.ParseUint(p.ListenMode, 8, 32)
		if err == nil {
			sp.mode = fs.FileMode(m) & fs.ModePerm
		}
	}
	for _, k := range []string{"listen.owner", "listen.group", "listen.mode"} {
		if s, ok := p.Settings[k]; ok && s.IsSet() {
			sp.fromConfig = append(sp.fromConfig, settingLoc(s))
		}
	}
	return sp, nil
}

func statSocket(path string) (socketPerm, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return socketPerm{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return socketPerm{}, false
	}
	return socketPerm{uid: st.Uid, gid: st.Gid, owner: userName(st.Uid), group: groupName(st.Gid), mode: fi.Mode().Perm()}, true
}

// blockedDir returns the first directory above path that id may not
// search, which makes every file below it unreachable.
func blockedDir(id identity, path string) string {
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		if sp, ok := statSocket(dir); ok && !id.may(sp.uid, sp.gid, sp.mode, 0o1) {
			return dir
		}
		if dir == "/" || dir == "." {
			return ""
		}
	}
}

// checkPermissions compares every unix socket nginx connects to with the
// user nginx's workers run as.
func (c *checkup) checkPermissions() {
	if c.ngx == nil {
		return
	}
	var id identity
	var userLoc *Location
	var idErr error
	resolved := false
	for _, t := range c.targets {
		if t.addr.Network != "unix" || len(t.refs) == 0 {
			continue
		}
		if !resolved {
			resolved = true
			id, userLoc, idErr = nginxIdentity(c.ngx.User)
			if userLoc == nil {
				userLoc = &Location{File: c.ngx.Main, Text: "user nobody; (nginx's default: the file has no user directive)"}
			}
		}
		if idErr != nil {
			c.notChecked("socket permissions: %v", idErr)
			return
		}
		pool := t.pool
		if pool != nil && (pool.Settings["listen.acl_users"].IsSet() || pool.Settings["listen.acl_groups"].IsSet()) {
			c.notChecked("socket permissions of %s: pool %s sets listen.acl_users/listen.acl_groups, whose POSIX ACLs this check does not read", t.addr, pool.Name)
			continue
		}
		sp, exists := statSocket(t.addr.Address)
		if !exists {
			if pool == nil {
				continue // nothing to compare with; the target finding says the socket is missing
			}
			var err error
			if sp, err = predictSocket(pool); err != nil {
				c.notChecked("socket permissions of %s: %v", t.addr, err)
				continue
			}
		}
		if dir := blockedDir(id, t.addr.Address); exists && dir != "" {
			c.add(Finding{ID: "socket_permission", Severity: SeverityError,
				Title:  fmt.Sprintf("nginx's user %s may not reach %s: directory %s is closed to it", id.name, t.addr, dir),
				Detail: fmt.Sprintf("nginx's workers run as %s; connecting to a socket needs search (x) permission on every directory above it.", id),
				Nginx:  append([]*Location{userLoc}, locs(t.refs)...),
				Impact: nginxSays(t.addr, syscall.EACCES) + " for every request sent there.",
				Fix:    fmt.Sprintf("chmod o+x %s, or move the socket (listen = ... in the pool) to a directory nginx can reach, such as /run/php/.", dir)})
			continue
		}
		if id.canWrite(sp.uid, sp.gid, sp.mode) {
			continue
		}
		f := Finding{ID: "socket_permission", Severity: SeverityError,
			Title: fmt.Sprintf("nginx's user %s may not connect to %s", id.name, t.addr),
			Nginx: append([]*Location{userLoc}, locs(t.refs)...),
		}
		how := "The socket is"
		if sp.predicted {
			how = "php-fpm will create the socket"
		}
		f.Detail = fmt.Sprintf("%s %s; nginx's workers run as %s, which is neither its owner nor in its group with write permission, and connecting needs write permission.", how, sp, id)
		if !exists {
			f.Detail = fmt.Sprintf("The socket does not exist now; from the pool's settings php-fpm will create it as %s. nginx's workers run as %s, which may not write to it, and connecting needs write permission.", sp, id)
		}
		f.Impact = nginxSays(t.addr, syscall.EACCES) + " for every request sent there."
		if pool != nil {
			f.FPM = append(f.FPM, settingLoc(pool.Listen))
			f.FPM = append(f.FPM, sp.fromConfig...)
			f.FPM = compactLocs(f.FPM)
			f.Fix = socketFix(pool, id) + fmt.Sprintf("\nthen restart php-fpm (systemctl restart %s).", serviceName(c.fpm))
			if sp.owner != "root" {
				f.Fix += fmt.Sprintf(" Or let nginx run as the socket's owner: user %s; in %s.", sp.owner, c.ngx.Main)
			}
		} else {
			f.Fix = fmt.Sprintf("Give %s write access to %s: set listen.owner/listen.group of its php-fpm pool to %s and listen.mode = 0660, then restart php-fpm.", id.name, t.addr.Address, id.name)
		}
		c.add(f)
	}
}

// socketFix says how to let id connect to pool's socket: each setting
// that needs a new value is changed on its own line where the pool sets
// it, or added to the pool where it does not.
func socketFix(pool *fpm.Pool, id identity) string {
	want := []struct{ key, value string }{
		{"listen.owner", id.name},
		{"listen.group", primaryGroup(id)},
		{"listen.mode", "0660"},
	}
	var change, add []string
	for _, w := range want {
		s := pool.Settings[w.key]
		switch {
		case !s.IsSet() && w.key == "listen.mode":
			// php-fpm's default, 0660, lets the group write.
		case !s.IsSet():
			add = append(add, fmt.Sprintf("    %s = %s", w.key, w.value))
		case s.Value != w.value && !(w.key == "listen.mode" && groupWritable(s.Value)):
			change = append(change, fmt.Sprintf("At %s:%d change\n    %s = %s\nto\n    %s = %s", s.File, s.Line, w.key, s.Raw, w.key, w.value))
		}
	}
	if len(add) > 0 {
		change = append(change, fmt.Sprintf("In pool %s (%s:%d) add\n%s", pool.Name, pool.File, pool.Line, strings.Join(add, "\n")))
	}
	return strings.Join(change, "\n")
}

// groupWritable reports whether an octal listen.mode lets the group write.
func groupWritable(mode string) bool {
	m, err := strconv.ParseUint(mode, 8, 32)
	return err == nil && m&0o020 != 0
}

func primaryGroup(id identity) string {
	if len(id.groups) > 0 {
		return id.groups[0]
	}
	return id.name
}

func userName(uid uint32) string {
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		return u.Username
	}
	return strconv.FormatUint(uint64(uid), 10)
}

func groupName(gid uint32) string {
	if g, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10)); err == nil {
		return g.Name
	}
	return strconv.FormatUint(uint64(gid), 10)
}
