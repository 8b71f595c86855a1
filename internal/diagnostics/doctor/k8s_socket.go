package doctor

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/nginxconf"
)

// Sockets and volumes: whether php-fpm, fcgiscope and nginx reach each
// other's addresses.

// k8sEnd is one side of a socket: the container and the address it uses.
type k8sEnd struct {
	kc   *k8sContainer
	role string
	addr fcgi.Addr
	// loc is where the address is configured; assumed is set when the
	// manifest does not say and the other side's address stands in.
	loc     *Location
	assumed bool
}

// mountFor returns the volume mount that holds file in a container, and
// file's path inside the volume.
func mountFor(c *corev1.Container, file string) (*corev1.VolumeMount, int, string) {
	best, bi := (*corev1.VolumeMount)(nil), -1
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		mp := strings.TrimSuffix(m.MountPath, "/")
		if file == mp || strings.HasPrefix(file, mp+"/") {
			if best == nil || len(m.MountPath) > len(best.MountPath) {
				best, bi = m, i
			}
		}
	}
	if best == nil {
		return nil, -1, ""
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(file, strings.TrimSuffix(best.MountPath, "/")), "/")
	return best, bi, path.Join("/", best.SubPath, rel)
}

// sameSocket reports whether two unix addresses, each as its container
// sees it, are the same file: the same path, or the same path in the same
// volume.
func sameSocket(a, b k8sEnd) bool {
	if a.addr.Network != b.addr.Network {
		return false
	}
	if a.addr.Network == "tcp" {
		return sameTCP(a.addr, b.addr)
	}
	if a.addr.Address == b.addr.Address {
		return true
	}
	ma, _, ra := mountFor(a.kc.c, a.addr.Address)
	mb, _, rb := mountFor(b.kc.c, b.addr.Address)
	return ma != nil && mb != nil && ma.Name == mb.Name && ra == rb
}

// sameTCP reports whether a client connecting to to reaches a server
// listening on listen, in the network namespace the pod's containers
// share.
func sameTCP(listen, to fcgi.Addr) bool {
	lh, lp, _ := net.SplitHostPort(listen.Address)
	th, tp, _ := net.SplitHostPort(to.Address)
	if lp != tp {
		return false
	}
	if lh == th || lh == "" || lh == "0.0.0.0" || lh == "::" {
		return true
	}
	return isLoopback(lh) && isLoopback(th)
}

func isLoopback(h string) bool {
	if h == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(strings.Trim(h, "[]"))
	return err == nil && a.Unmap().IsLoopback()
}

// checkSockets checks fcgiscope's two addresses: that they parse, that
// php-fpm listens on its upstream, and that nginx passes to its listen
// address.
func (p *k8sPod) checkSockets() {
	if p.fcgiscope == nil {
		return
	}
	up := p.fcgiscopeSetting("FCGISCOPE_UPSTREAM", "127.0.0.1:9000")
	listen := p.fcgiscopeSetting("FCGISCOPE_LISTEN", "127.0.0.1:9001")
	upAddr, err1 := fcgi.ParseAddr(up.value)
	listenAddr, err2 := fcgi.ParseAddr(listen.value)
	for _, bad := range []struct {
		v   k8sValue
		err error
	}{{up, err1}, {listen, err2}} {
		if bad.err != nil && bad.v.known {
			p.k.c.add(Finding{ID: "k8s_socket", Severity: SeverityError,
				Title:  "fcgiscope refuses to start: " + bad.err.Error(),
				K8s:    []*Location{bad.v.loc},
				Impact: "fcgiscope exits at start; the container restarts in a loop (CrashLoopBackOff).",
				Fix:    fmt.Sprintf("At %s write the address as unix:/path/to.sock or host:port.", bad.v.loc)})
		}
	}
	if err1 == nil && up.known && p.fpm != nil {
		p.fpmSocket(k8sEnd{kc: p.fcgiscope, role: "fcgiscope", addr: upAddr, loc: up.loc})
	}
	if err2 == nil && listen.known && p.nginx != nil {
		p.fcgiscopeSocket(k8sEnd{kc: p.fcgiscope, role: "fcgiscope", addr: listenAddr, loc: listen.loc}, upAddr)
	}
}

// fpmSocket checks the way from fcgiscope to php-fpm.
func (p *k8sPod) fpmSocket(client k8sEnd) {
	server := k8sEnd{kc: p.fpm, role: "php-fpm", addr: client.addr, assumed: true}
	var pool *fpm.Pool
	if len(p.pools) > 0 {
		var listens []string
		var locs []*Location
		for _, pl := range p.pools {
			if pl.ListenAddr.IsZero() {
				continue
			}
			e := k8sEnd{kc: p.fpm, role: "php-fpm", addr: pl.ListenAddr, loc: p.fpmLoc(pl.Listen)}
			if sameSocket(e, client) {
				pool, server = pl, e
				break
			}
			listens = append(listens, fmt.Sprintf("pool [%s] listens on %s", pl.Name, pl.ListenAddr))
			locs = append(locs, e.loc)
		}
		if pool == nil && len(listens) > 0 {
			f := Finding{ID: "k8s_socket", Severity: SeverityError,
				Title:  fmt.Sprintf("fcgiscope's upstream %s is no address php-fpm listens on", client.addr),
				Detail: fmt.Sprintf("fcgiscope sends requests to %s; in the ConfigMap php-fpm reads, %s.", client.addr, strings.Join(listens, "; ")),
				K8s:    compactLocs(append([]*Location{client.loc}, locs...)),
				Impact: "Every request gets 502 Bad Gateway (fcgiscope: upstream_socket_missing or upstream_refused), and /readyz fails.",
			}
			for _, pl := range p.pools {
				if !pl.ListenAddr.IsZero() {
					f.Fix = fmt.Sprintf("Point FCGISCOPE_UPSTREAM (%s) at %s, or %s\n    listen = %s", client.loc, pl.ListenAddr, p.settingWhere(pl, "listen"), client.addr.Address)
					break
				}
			}
			p.k.c.add(f)
			return
		}
		// No pool of the ConfigMaps sets listen: the image's own pool
		// files do, and the socket's path is fcgiscope's guess.
	}
	if client.addr.Network == "tcp" {
		return // one network namespace: no volume to share
	}
	if !p.sharedVolume(server, client) {
		return
	}
	p.fpmSocketPermission(pool, server, client)
}

// fcgiscopeSocket checks the way from nginx to fcgiscope.
func (p *k8sPod) fcgiscopeSocket(server k8sEnd, fpmAddr fcgi.Addr) {
	client := k8sEnd{kc: p.nginx, role: "nginx", addr: server.addr, assumed: true}
	if len(p.ngx) > 0 {
		var found, direct bool
		var others []string
		var locs []*Location
		for _, cfg := range p.ngx {
			for _, t := range nginxTargets(cfg) {
				e := k8sEnd{kc: p.nginx, role: "nginx", addr: t.addr, loc: p.ngxLoc(cfg, t.dir)}
				switch {
				case sameSocket(e, server):
					if !found {
						client, found = e, true
					}
				case sameSocket(e, k8sEnd{kc: p.fcgiscope, addr: fpmAddr}):
					direct = true
					others = append(others, t.addr.String())
					locs = append(locs, e.loc)
				default:
					others = append(others, t.addr.String())
					locs = append(locs, e.loc)
				}
			}
		}
		switch {
		case !found && direct:
			p.k.c.add(Finding{ID: "k8s_socket", Severity: SeverityWarning,
				Title:  fmt.Sprintf("nginx passes to php-fpm directly (%s), not through fcgiscope (%s)", strings.Join(others, ", "), server.addr),
				K8s:    compactLocs(append(locs, server.loc)),
				Impact: "fcgiscope sees no request: failures get nginx's bare 502 and are neither explained nor counted.",
				Fix:    fmt.Sprintf("In nginx's configuration (%s) pass to %s.", locs[0], server.addr)})
			return
		case !found:
			p.k.c.add(Finding{ID: "k8s_socket", Severity: SeverityError,
				Title:  fmt.Sprintf("nginx passes to %s; fcgiscope listens on %s", strings.Join(others, ", "), server.addr),
				K8s:    compactLocs(append(locs, server.loc)),
				Impact: "Every PHP request gets 502 Bad Gateway from nginx (connect() failed).",
				Fix:    fmt.Sprintf("Make nginx's fastcgi_pass (or its upstream's server) %s, or set FCGISCOPE_LISTEN (%s) to the address nginx uses.", server.addr, server.loc)})
			return
		}
	}
	if server.addr.Network == "tcp" {
		return
	}
	if !p.sharedVolume(server, client) {
		return
	}
	p.fcgiscopeSocketPermission(server, client)
}

type nginxTarget struct {
	addr fcgi.Addr
	dir  *nginxconf.Directive
}

// nginxTargets lists the addresses nginx's fastcgi_pass lines reach,
// through upstream blocks.
func nginxTargets(cfg *nginxconf.Config) []nginxTarget {
	var out []nginxTarget
	for _, ps := range cfg.Passes {
		arg := ps.Dir.Arg(0)
		if u := cfg.Upstream(arg); u != nil {
			for _, s := range u.Servers {
				if a, err := nginxconf.ParseServerAddr(s.Arg(0)); err == nil {
					out = append(out, nginxTarget{a, s})
				}
			}
			continue
		}
		if a, err := fcgi.ParseAddr(arg); err == nil {
			out = append(out, nginxTarget{a, ps.Dir})
		}
	}
	return out
}

// sharedVolume checks that a unix socket is on a volume both containers
// mount, at paths that agree. It reports whether the socket is shared.
func (p *k8sPod) sharedVolume(server, client k8sEnd) bool {
	sock := server.addr.Address
	dir := path.Dir(sock)
	ms, msi, rs := mountFor(server.kc.c, sock)
	mc, mci, rc := mountFor(client.kc.c, client.addr.Address)
	locs := compactLocs([]*Location{server.loc, client.loc})
	what := fmt.Sprintf("%s's socket %s", server.role, server.addr)
	// volFix says how to share the socket's directory: mount the volume
	// one side already has there in the other, or add one for both.
	volFix := func(missing []*k8sContainer, have *corev1.VolumeMount) string {
		var names []string
		for _, kc := range missing {
			names = append(names, kc.c.Name)
		}
		if have != nil {
			sub := ""
			if have.SubPath != "" {
				sub = "\n        subPath: " + have.SubPath
			}
			return fmt.Sprintf("Mount volume %s in %s too, where the other container has it; add to its volumeMounts (%s)\n      - name: %s\n        mountPath: %s%s",
				have.Name, strings.Join(names, " and "), p.doc.where(missing[0].at+".volumeMounts"), have.Name, have.MountPath, sub)
		}
		return fmt.Sprintf("Put the socket on an emptyDir volume both containers mount at %s. At %s add\n    volumes:\n      - name: sockets\n        emptyDir:\n          medium: Memory\nand to the volumeMounts of %s\n      - name: sockets\n        mountPath: %s",
			dir, p.doc.where(p.w.at+".volumes"), strings.Join(names, " and "), dir)
	}
	switch {
	case ms == nil || mc == nil:
		var missing []*k8sContainer
		for _, x := range []struct {
			m  *corev1.VolumeMount
			kc *k8sContainer
		}{{ms, server.kc}, {mc, client.kc}} {
			if x.m == nil {
				missing = append(missing, x.kc)
				locs = append(locs, p.doc.loc(x.kc.at, x.kc.what()+": no volume mounted at "+dir))
			}
		}
		var names []string
		for _, kc := range missing {
			names = append(names, kc.c.Name)
		}
		impact := fmt.Sprintf("%s cannot see the socket %s creates: every request gets 502 Bad Gateway", client.role, server.role)
		if client.role == "fcgiscope" {
			impact += " (fcgiscope: upstream_socket_missing), and fcgiscope's /readyz fails."
		} else {
			impact += " from nginx (connect() to " + client.addr.String() + " failed (2: No such file or directory))."
		}
		p.k.c.add(Finding{ID: "k8s_socket", Severity: SeverityError,
			Title:  fmt.Sprintf("%s is on no volume shared with %s", what, client.role),
			Detail: fmt.Sprintf("A path outside every volume is in the container's own file system, which no other container sees. No volume is mounted at %s in %s.", dir, strings.Join(names, " and ")),
			K8s:    locs,
			Impact: impact,
			Fix:    volFix(missing, cmp.Or(ms, mc))})
		return false
	case ms.Name != mc.Name:
		p.k.c.add(Finding{ID: "k8s_socket", Severity: SeverityError,
			Title:  fmt.Sprintf("%s and %s mount different volumes where %s is", server.role, client.role, what),
			Detail: fmt.Sprintf("%s has volume %s at %s, %s has volume %s at %s.", server.kc.what(), ms.Name, ms.MountPath, client.kc.what(), mc.Name, mc.MountPath),
			K8s: append(locs, p.doc.loc(fmt.Sprintf("%s.volumeMounts[%d]", server.kc.at, msi), ms.Name+" at "+ms.MountPath),
				p.doc.loc(fmt.Sprintf("%s.volumeMounts[%d]", client.kc.at, mci), mc.Name+" at "+mc.MountPath)),
			Impact: fmt.Sprintf("%s never sees the socket: every request gets 502 Bad Gateway.", client.role),
			Fix:    fmt.Sprintf("Mount the same volume (%s) in %s at %s.", ms.Name, client.kc.c.Name, mc.MountPath)})
		return false
	case rs != rc:
		mountText := func(m *corev1.VolumeMount) string {
			if m.SubPath != "" {
				return fmt.Sprintf("%s (subPath %s)", m.MountPath, m.SubPath)
			}
			return m.MountPath
		}
		fix := fmt.Sprintf("Mount volume %s the same way in both containers (the same subPath, or none).", ms.Name)
		if root := path.Join("/", mc.SubPath); rs == root || strings.HasPrefix(rs, strings.TrimSuffix(root, "/")+"/") {
			inClient := path.Join(mc.MountPath, strings.TrimPrefix(rs, root))
			fix = fmt.Sprintf("Make %s's address unix:%s, the path the socket has in %s, or mount volume %s the same way in both containers.", client.role, inClient, client.kc.c.Name, ms.Name)
		}
		p.k.c.add(Finding{ID: "k8s_socket", Severity: SeverityError,
			Title:  fmt.Sprintf("%s and %s name different files for %s", server.role, client.role, what),
			Detail: fmt.Sprintf("Both mount volume %s, %s at %s and %s at %s: %s creates %s in the volume, %s connects to %s.", ms.Name, server.kc.c.Name, mountText(ms), client.kc.c.Name, mountText(mc), server.role, rs, client.role, rc),
			K8s: append(locs, p.doc.loc(fmt.Sprintf("%s.volumeMounts[%d]", server.kc.at, msi), ms.Name+" at "+mountText(ms)),
				p.doc.loc(fmt.Sprintf("%s.volumeMounts[%d]", client.kc.at, mci), mc.Name+" at "+mountText(mc))),
			Impact: fmt.Sprintf("%s finds no socket at %s: every request gets 502 Bad Gateway.", client.role, client.addr),
			Fix:    fix})
		return false
	}
	v, vi := p.volume(ms.Name)
	if v == nil {
		return false // the API server refuses a mount of an undeclared volume; kubectl says so
	}
	vloc := p.doc.loc(fmt.Sprintf("%s.volumes[%d]", p.w.at, vi), "volume "+v.Name)
	switch {
	case v.ConfigMap != nil || v.Secret != nil || v.Projected != nil || v.DownwardAPI != nil:
		p.k.c.add(Finding{ID: "k8s_socket", Severity: SeverityError,
			Title:  fmt.Sprintf("%s is on volume %s, which is read-only", what, v.Name),
			Detail: "ConfigMap, Secret, projected and downwardAPI volumes are read-only: no socket can be created in them.",
			K8s:    append(locs, vloc),
			Impact: fmt.Sprintf("%s cannot create its socket (Read-only file system) and does not start.", server.role),
			Fix:    fmt.Sprintf("Give the socket its own emptyDir volume; at %s:\n      - name: sockets\n        emptyDir:\n          medium: Memory", p.doc.where(p.w.at+".volumes"))})
		return false
	case ms.ReadOnly:
		p.k.c.add(Finding{ID: "k8s_socket", Severity: SeverityError,
			Title:  fmt.Sprintf("%s mounts volume %s read-only, where it creates its socket", server.kc.what(), v.Name),
			K8s:    append(locs, p.doc.loc(fmt.Sprintf("%s.volumeMounts[%d].readOnly", server.kc.at, msi), "readOnly: true")),
			Impact: fmt.Sprintf("%s cannot create %s (Read-only file system) and does not start.", server.role, sock),
			Fix:    fmt.Sprintf("Remove readOnly: true at %s.", p.doc.where(fmt.Sprintf("%s.volumeMounts[%d].readOnly", server.kc.at, msi)))})
		return false
	case v.EmptyDir == nil && v.HostPath == nil:
		p.k.c.add(Finding{ID: "k8s_socket", Severity: SeverityWarning,
			Title:  fmt.Sprintf("%s is on volume %s, which is not an emptyDir", what, v.Name),
			Detail: "A socket needs no storage; on a network file system creating it may fail, and a volume shared with other pods lets their php-fpm or fcgiscope replace this pod's socket.",
			K8s:    append(locs, vloc),
			Fix:    fmt.Sprintf("Give the socket its own volume; at %s:\n      - name: sockets\n        emptyDir:\n          medium: Memory", p.doc.where(p.w.at+".volumes"))})
	}
	return true
}
