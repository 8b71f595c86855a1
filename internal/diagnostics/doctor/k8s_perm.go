package doctor

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
)

// Users and groups: whether a client may connect to a Unix socket.

// k8sIdentity is who a container's process runs as, as far as the
// manifest says.
type k8sIdentity struct {
	uid, gid           int64
	uidKnown, gidKnown bool
	// groups are the supplementary groups: supplementalGroups and
	// fsGroup.
	groups []int64
	// dacOverride is set for root with CAP_DAC_OVERRIDE, which ignores
	// file modes.
	dacOverride bool
	how         string
	locs        []*Location
}

func (id k8sIdentity) String() string {
	s := "uid " + strconv.FormatInt(id.uid, 10)
	if !id.uidKnown {
		s = "uid unknown"
	}
	if id.gidKnown {
		s += ", gid " + strconv.FormatInt(id.gid, 10)
	}
	if len(id.groups) > 0 {
		var gs []string
		for _, g := range id.groups {
			gs = append(gs, strconv.FormatInt(g, 10))
		}
		s += ", groups " + strings.Join(gs, ",")
	}
	return s
}

// identity works out who a container runs as: runAsUser and runAsGroup of
// the container, else of the pod, else the image's user for the images
// the doctor knows.
func (p *k8sPod) identity(kc *k8sContainer, role string) k8sIdentity {
	var id k8sIdentity
	psc := p.spec.SecurityContext
	csc := kc.c.SecurityContext
	scAt := kc.at + ".securityContext"
	podAt := p.w.at + ".securityContext"
	switch {
	case csc != nil && csc.RunAsUser != nil:
		id.uid, id.uidKnown = *csc.RunAsUser, true
		id.locs = append(id.locs, p.doc.loc(scAt+".runAsUser", fmt.Sprintf("runAsUser: %d  (%s)", id.uid, kc.what())))
	case psc != nil && psc.RunAsUser != nil:
		id.uid, id.uidKnown = *psc.RunAsUser, true
		id.locs = append(id.locs, p.doc.loc(podAt+".runAsUser", fmt.Sprintf("runAsUser: %d  (pod)", id.uid)))
	}
	switch {
	case csc != nil && csc.RunAsGroup != nil:
		id.gid, id.gidKnown = *csc.RunAsGroup, true
		id.locs = append(id.locs, p.doc.loc(scAt+".runAsGroup", fmt.Sprintf("runAsGroup: %d  (%s)", id.gid, kc.what())))
	case psc != nil && psc.RunAsGroup != nil:
		id.gid, id.gidKnown = *psc.RunAsGroup, true
		id.locs = append(id.locs, p.doc.loc(podAt+".runAsGroup", fmt.Sprintf("runAsGroup: %d  (pod)", id.gid)))
	}
	base, _ := imageName(kc.c.Image)
	switch {
	case role == "nginx" && (!id.uidKnown || id.uid == 0) && strings.Contains(base, "nginx"):
		// The master may be root; the workers, which connect, run as
		// the nginx images' nginx user.
		id.uid, id.uidKnown = 101, true
		if !id.gidKnown || id.gid == 0 {
			id.gid, id.gidKnown = 101, true
		}
		id.how = "user nginx, 101:101, in the nginx images"
	case role == "fcgiscope" && !id.uidKnown && base == "fcgiscope":
		id.uid, id.uidKnown = 65532, true
		if !id.gidKnown {
			id.gid, id.gidKnown = 65532, true
		}
		id.how = "USER 65532:65532 of the fcgiscope image"
	case role == "php-fpm" && !id.uidKnown:
		id.uid, id.uidKnown = 0, true
		if !id.gidKnown {
			id.gid, id.gidKnown = 0, true
		}
		id.how = "root, the php images' user (the master process creates the socket)"
	}
	if id.how != "" {
		id.locs = append(id.locs, p.doc.loc(kc.at+".image", fmt.Sprintf("image: %s  (%s: %s)", kc.c.Image, kc.what(), id.how)))
	}
	if psc != nil {
		id.groups = append(id.groups, psc.SupplementalGroups...)
		if psc.FSGroup != nil {
			id.groups = append(id.groups, *psc.FSGroup)
			id.locs = append(id.locs, p.doc.loc(podAt+".fsGroup", fmt.Sprintf("fsGroup: %d  (pod)", *psc.FSGroup)))
		}
		if len(psc.SupplementalGroups) > 0 {
			id.locs = append(id.locs, p.doc.loc(podAt+".supplementalGroups", "supplementalGroups  (pod)"))
		}
	}
	if id.uidKnown && id.uid == 0 {
		id.dacOverride = true
		if csc != nil && csc.Capabilities != nil {
			for _, c := range csc.Capabilities.Drop {
				if c == "ALL" || c == "DAC_OVERRIDE" || c == "CAP_DAC_OVERRIDE" {
					id.dacOverride = false
				}
			}
		}
		if csc != nil && csc.Privileged != nil && *csc.Privileged {
			id.dacOverride = true
		}
	}
	return id
}

// canConnect reports whether id may connect to a socket of this owner,
// group and mode (connecting needs write permission); known is false when
// the manifest does not say enough.
func (id k8sIdentity) canConnect(uid, gid int64, gidKnown bool, mode int64) (ok, known bool) {
	switch {
	case !id.uidKnown:
		return false, false
	case id.dacOverride:
		return true, true
	case id.uid == uid:
		return mode&0o200 != 0, true
	case gidKnown && ((id.gidKnown && id.gid == gid) || slices.Contains(id.groups, gid)):
		return mode&0o020 != 0, true
	case mode&0o002 != 0:
		return true, true
	case !id.gidKnown && (!gidKnown || mode&0o020 != 0):
		return false, false
	}
	return false, true
}

// resolveID turns a user or group of php-fpm's configuration into its
// number in the usual images; ok is false for a name the manifest cannot
// resolve.
func resolveID(name string, alpine bool) (int64, bool) {
	if n, err := strconv.ParseInt(name, 10, 64); err == nil {
		return n, true
	}
	switch name {
	case "root":
		return 0, true
	case "www-data":
		if alpine {
			return 82, true
		}
		return 33, true
	case "nginx":
		return 101, true
	case "nobody", "nogroup":
		return 65534, true
	case "nonroot":
		return 65532, true
	}
	return 0, false
}

func (p *k8sPod) alpine(kc *k8sContainer) bool {
	_, tag := imageName(kc.c.Image)
	return strings.Contains(tag, "alpine")
}

func (p *k8sPod) fsGroup() (int64, bool) {
	if sc := p.spec.SecurityContext; sc != nil && sc.FSGroup != nil {
		return *sc.FSGroup, true
	}
	return 0, false
}

// fpmSocketPermission checks that fcgiscope may connect to the socket
// php-fpm creates, from the pool's listen.owner, listen.group and
// listen.mode.
func (p *k8sPod) fpmSocketPermission(pool *fpm.Pool, server, client k8sEnd) {
	if pool == nil {
		p.k.c.notChecked("kubernetes: %s: who may open php-fpm's socket: the pool's listen.owner/listen.mode are in no ConfigMap given", p.w.name())
		return
	}
	master := p.identity(p.fpm, "php-fpm")
	cli := p.identity(p.fcgiscope, "fcgiscope")
	alpine := p.alpine(p.fpm)
	mode := int64(0o660)
	if pool.ListenMode != "" {
		if m, err := strconv.ParseInt(pool.ListenMode, 8, 64); err == nil {
			mode = m
		}
	}
	fsg, hasFSG := p.fsGroup()
	var owner, group int64
	var groupKnown bool
	switch {
	case master.uidKnown && master.uid == 0:
		owner, group, groupKnown = 0, master.gid, master.gidKnown
		if hasFSG {
			group, groupKnown = fsg, true // the emptyDir is setgid fsGroup
		}
		if pool.ListenOwner != "" {
			u, ok := resolveID(pool.ListenOwner, alpine)
			if !ok {
				p.k.c.notChecked("kubernetes: %s: listen.owner = %s is a name only the image can resolve; check who may open php-fpm's socket with `id %s` in it", p.w.name(), pool.ListenOwner, pool.ListenOwner)
				return
			}
			owner = u
			if _, err := strconv.Atoi(pool.ListenOwner); err != nil {
				group, groupKnown = u, true // the usual images give these users a group of the same number
			}
		}
		if pool.ListenGroup != "" {
			g, ok := resolveID(pool.ListenGroup, alpine)
			if !ok {
				p.k.c.notChecked("kubernetes: %s: listen.group = %s is a name only the image can resolve", p.w.name(), pool.ListenGroup)
				return
			}
			group, groupKnown = g, true
		}
	case master.uidKnown:
		if pool.ListenOwner != "" || pool.ListenGroup != "" {
			p.k.c.notChecked("kubernetes: %s: php-fpm runs as uid %d, not root, and cannot hand its socket to listen.owner/listen.group; check it running", p.w.name(), master.uid)
			return
		}
		owner, group, groupKnown = master.uid, master.gid, master.gidKnown
		if hasFSG {
			group, groupKnown = fsg, true
		}
	default:
		return
	}
	ok, known := cli.canConnect(owner, group, groupKnown, mode)
	if !known {
		p.k.c.notChecked("kubernetes: %s: whether fcgiscope (%s) may open php-fpm's socket: set runAsUser and runAsGroup in its securityContext to let the doctor check", p.w.name(), cli)
		return
	}
	if ok {
		return
	}
	sock := fmt.Sprintf("%d:%s mode %04o", owner, groupText(group, groupKnown), mode)
	if pool.ListenOwner != "" || pool.ListenGroup != "" {
		sock += fmt.Sprintf(" (listen.owner %s, listen.group %s; www-data is 33 in the Debian-based php images, 82 in the Alpine ones)", orDefault(pool.ListenOwner, "unset"), orDefault(pool.ListenGroup, "unset"))
	}
	locs := compactLocs(append([]*Location{server.loc, p.fpmLoc(pool.Settings["listen.owner"]), p.fpmLoc(pool.Settings["listen.group"]), p.fpmLoc(pool.Settings["listen.mode"])}, cli.locs...))
	how := ""
	if cli.how != "" {
		how = " (" + cli.how + ")"
	}
	p.k.c.add(Finding{ID: "k8s_socket_permission", Severity: SeverityError,
		Title:  fmt.Sprintf("fcgiscope (%s) may not connect to php-fpm's socket %s", cli, server.addr),
		Detail: fmt.Sprintf("php-fpm creates %s as %s, from pool [%s]'s listen.owner, listen.group and listen.mode (php-fpm's defaults: its own user, 0660). fcgiscope runs as %s%s: neither the owner nor in the group with write permission, and connecting needs write permission.", server.addr, sock, pool.Name, cli, how),
		K8s:    locs,
		Impact: "Every request gets 502 Bad Gateway (fcgiscope: upstream_permission_denied), and /readyz fails.",
		Fix:    fmt.Sprintf("Hand the socket to fcgiscope's user: %s\n    listen.owner = %d\n    listen.mode = 0660", p.settingWhere(pool, "listen.owner"), cli.uid)})
}

func groupText(g int64, known bool) string {
	if !known {
		return "?"
	}
	return strconv.FormatInt(g, 10)
}

// fcgiscopeSocketPermission checks that nginx's workers may connect to the
// socket fcgiscope creates with its own user and group and
// FCGISCOPE_LISTEN_MODE.
func (p *k8sPod) fcgiscopeSocketPermission(server, client k8sEnd) {
	owner := p.identity(p.fcgiscope, "fcgiscope")
	cli := p.identity(p.nginx, "nginx")
	modeV := p.fcgiscopeSetting("FCGISCOPE_LISTEN_MODE", "0660")
	mode, err := strconv.ParseInt(modeV.value, 8, 64)
	if err != nil || !modeV.known {
		return
	}
	if !owner.uidKnown {
		p.k.c.notChecked("kubernetes: %s: who owns fcgiscope's socket: set runAsUser and runAsGroup in fcgiscope's securityContext to let the doctor check", p.w.name())
		return
	}
	group, groupKnown := owner.gid, owner.gidKnown
	if g, ok := p.fsGroup(); ok {
		group, groupKnown = g, true
	}
	ok, known := cli.canConnect(owner.uid, group, groupKnown, mode)
	if !known {
		p.k.c.notChecked("kubernetes: %s: whether nginx may open fcgiscope's socket: set runAsUser and runAsGroup in nginx's securityContext to let the doctor check", p.w.name())
		return
	}
	if ok {
		return
	}
	how := ""
	if cli.how != "" {
		how = " (" + cli.how + ")"
	}
	gidHint := strconv.FormatInt(cli.gid, 10)
	if !cli.gidKnown {
		gidHint = "nginx's group"
	}
	p.k.c.add(Finding{ID: "k8s_socket_permission", Severity: SeverityError,
		Title:  fmt.Sprintf("nginx (%s) may not connect to fcgiscope's socket %s", cli, server.addr),
		Detail: fmt.Sprintf("fcgiscope creates %s as %d:%s mode %04o: its own user and group (the volume's fsGroup when the pod sets one) and FCGISCOPE_LISTEN_MODE. nginx's workers run as %s%s: neither the owner nor in the group with write permission, and connecting needs write permission.", server.addr, owner.uid, groupText(group, groupKnown), mode, cli, how),
		K8s:    compactLocs(append(append([]*Location{server.loc, client.loc, modeV.loc}, owner.locs...), cli.locs...)),
		Impact: "Every PHP request gets 502 Bad Gateway from nginx (connect() to " + server.addr.String() + " failed (13: Permission denied)).",
		Fix:    fmt.Sprintf("Run fcgiscope in nginx's group: in its securityContext (%s) set\n    runAsGroup: %s\nand keep FCGISCOPE_LISTEN_MODE=0660; or set fsGroup: %s in the pod's securityContext.", p.doc.where(p.fcgiscope.at+".securityContext"), gidHint, gidHint)})
}
