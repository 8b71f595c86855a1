package diagnostics

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
)

// permissionHints explains an EACCES on a unix socket: who owns it, its
// mode, and who fcgiscope runs as.
func permissionHints(path string, ev map[string]string) []string {
	me := describeProcessUser()
	ev["process_user"] = me
	fi, err := os.Stat(path)
	if err != nil {
		return []string{fmt.Sprintf("fcgiscope runs as %s; check the permissions of %s and of every directory above it.", me, path)}
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	owner, group := userName(st.Uid), groupName(st.Gid)
	mode := fi.Mode().Perm()
	ev["socket_owner"], ev["socket_group"], ev["socket_mode"] = owner, group, fmt.Sprintf("%04o", mode)
	return []string{
		fmt.Sprintf("The socket %s is owned by %s:%s with mode %04o; fcgiscope runs as %s, which may not write to it.", path, owner, group, mode, me),
		fmt.Sprintf("In the php-fpm pool, set listen.owner/listen.group to the user fcgiscope runs as (or add that user to group %s) and listen.mode = 0660, then restart php-fpm.", group),
	}
}

func describeProcessUser() string {
	uid, gid := os.Geteuid(), os.Getegid()
	s := userName(uint32(uid)) + " (uid " + strconv.Itoa(uid) + ", gid " + strconv.Itoa(gid)
	if groups, err := os.Getgroups(); err == nil && len(groups) > 0 {
		var names []string
		for _, g := range groups {
			names = append(names, groupName(uint32(g)))
		}
		s += ", groups " + strings.Join(names, ",")
	}
	return s + ")"
}

func userName(uid uint32) string {
	if u, err := user.LookupId(strconv.Itoa(int(uid))); err == nil {
		return u.Username
	}
	return strconv.Itoa(int(uid))
}

func groupName(gid uint32) string {
	if g, err := user.LookupGroupId(strconv.Itoa(int(gid))); err == nil {
		return g.Name
	}
	return strconv.Itoa(int(gid))
}
