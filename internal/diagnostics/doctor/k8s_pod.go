package doctor

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/nginxconf"
)

// One pod: which containers run fcgiscope, php-fpm and nginx, and the
// configuration they read from ConfigMaps.

// containers lists the pod's containers: init containers first, as the
// kubelet starts them.
func (p *k8sPod) containers() []*k8sContainer {
	var out []*k8sContainer
	for i := range p.spec.InitContainers {
		c := &p.spec.InitContainers[i]
		side := c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		out = append(out, &k8sContainer{c: c, at: fmt.Sprintf("%s.initContainers[%d]", p.w.at, i), init: true, sidecar: side})
	}
	for i := range p.spec.Containers {
		out = append(out, &k8sContainer{c: &p.spec.Containers[i], at: fmt.Sprintf("%s.containers[%d]", p.w.at, i)})
	}
	return out
}

// imageName splits an image reference into its repository's last path
// element and its tag.
func imageName(image string) (base, tag string) {
	image, _, _ = strings.Cut(image, "@")
	if i := strings.LastIndexByte(image, ':'); i > strings.LastIndexByte(image, '/') {
		image, tag = image[:i], image[i+1:]
	}
	return path.Base(image), tag
}

// findRoles picks the containers that run fcgiscope, php-fpm and nginx,
// by image, name and command.
func (p *k8sPod) findRoles() {
	all := p.containers()
	for _, kc := range all {
		base, _ := imageName(kc.c.Image)
		if base == "fcgiscope" {
			p.fcgiscope = kc
			break
		}
	}
	if p.fcgiscope == nil {
		for _, kc := range all {
			for _, e := range kc.c.Env {
				if e.Name == "FCGISCOPE_UPSTREAM" || e.Name == "FCGISCOPE_LISTEN" {
					p.fcgiscope = kc
				}
			}
			if p.fcgiscope != nil {
				break
			}
		}
	}
	for _, kc := range all {
		if kc == p.fcgiscope || (kc.init && !kc.sidecar) {
			continue
		}
		base, tag := imageName(kc.c.Image)
		cmd := strings.Join(append(slices.Clone(kc.c.Command), kc.c.Args...), " ")
		switch {
		case p.fpm == nil && (strings.Contains(kc.c.Name, "fpm") || strings.Contains(cmd, "php-fpm") ||
			strings.Contains(base, "fpm") || (strings.Contains(base, "php") && strings.Contains(tag, "fpm"))):
			p.fpm = kc
		case p.nginx == nil && (strings.Contains(base, "nginx") || strings.Contains(kc.c.Name, "nginx") || strings.Contains(cmd, "nginx")):
			p.nginx = kc
		}
	}
}

// configMap returns the ConfigMap name in the pod's namespace, or one
// without a namespace where either does not say.
func (p *k8sPod) configMap(name string) *k8sConfigMap {
	var found *k8sConfigMap
	for _, cm := range p.k.configMaps {
		if cm.cm.Name != name {
			continue
		}
		if cm.cm.Namespace == p.w.meta.Namespace {
			return cm
		}
		if cm.cm.Namespace == "" || p.w.meta.Namespace == "" {
			found = cm
		}
	}
	return found
}

func (p *k8sPod) volume(name string) (*corev1.Volume, int) {
	for i := range p.spec.Volumes {
		if p.spec.Volumes[i].Name == name {
			return &p.spec.Volumes[i], i
		}
	}
	return nil, -1
}

// files returns the ConfigMap keys a container sees, at the paths it sees
// them.
func (p *k8sPod) files(kc *k8sContainer) []*k8sFile {
	var out []*k8sFile
	for _, m := range kc.c.VolumeMounts {
		v, _ := p.volume(m.Name)
		if v == nil {
			continue
		}
		type source struct {
			name  string
			items []corev1.KeyToPath
		}
		var srcs []source
		if v.ConfigMap != nil {
			srcs = append(srcs, source{v.ConfigMap.Name, v.ConfigMap.Items})
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.ConfigMap != nil {
					srcs = append(srcs, source{s.ConfigMap.Name, s.ConfigMap.Items})
				}
			}
		}
		for _, s := range srcs {
			cm := p.configMap(s.name)
			if cm == nil {
				p.k.c.notChecked("kubernetes: ConfigMap %s, mounted by %s of %s, is not in the manifests given", s.name, kc.what(), p.w.name())
				continue
			}
			keys := make([]string, 0, len(cm.cm.Data))
			for key := range cm.cm.Data {
				keys = append(keys, key)
			}
			sort.Strings(keys)
			for _, key := range keys {
				rel := key
				if len(s.items) > 0 {
					rel = ""
					for _, it := range s.items {
						if it.Key == key {
							rel = it.Path
						}
					}
					if rel == "" {
						continue
					}
				}
				at := path.Join(m.MountPath, rel)
				if m.SubPath != "" {
					if m.SubPath != rel {
						continue
					}
					at = m.MountPath
				}
				out = append(out, &k8sFile{cm: cm, key: key, path: at, data: cm.cm.Data[key]})
			}
		}
	}
	return out
}

var (
	fpmSection = regexp.MustCompile(`(?m)^\s*\[[^\]]+\]\s*(;.*)?$`)
	fpmListen  = regexp.MustCompile(`(?m)^\s*(listen|pm|pm\.max_children|process_control_timeout)\s*=`)
)

// readConfigMaps reads php-fpm's and nginx's configuration from the
// ConfigMaps their containers mount.
func (p *k8sPod) readConfigMaps() {
	if p.fpm != nil {
		env := p.envLookup(p.fpm)
		files := p.files(p.fpm)
		// php-fpm reads php-fpm.conf, then the pool files it includes in
		// name order.
		sort.SliceStable(files, func(i, j int) bool {
			return path.Base(files[i].path) == "php-fpm.conf" && path.Base(files[j].path) != "php-fpm.conf"
		})
		for _, f := range files {
			switch {
			case strings.HasSuffix(f.key, ".ini") && !fpmListen.MatchString(f.data):
				p.readPHPIni(f)
			case fpmSection.MatchString(f.data) && fpmListen.MatchString(f.data):
				cfg := fpm.Parse(f.path, []byte(f.data), env)
				p.fpmFiles[f.path] = f
				p.fpmConfs = append(p.fpmConfs, cfg)
				p.pools = append(p.pools, cfg.Pools...)
			}
		}
	}
	if p.nginx != nil {
		for _, f := range p.files(p.nginx) {
			if !strings.Contains(f.data, "fastcgi_pass") {
				continue
			}
			fsys := nginxconf.DumpFS{f.path: []byte(f.data)}
			cfg, err := nginxconf.Read(f.name(), f.path, fsys.Open, fsys.Glob)
			if err != nil || cfg == nil {
				p.k.c.notChecked("kubernetes: nginx's configuration in %s: %v", f.name(), err)
				continue
			}
			p.ngx = append(p.ngx, cfg)
			p.ngxFileOf[cfg] = f
			p.ngxFiles = append(p.ngxFiles, f)
		}
	}
}

// readPHPIni takes memory_limit from a php.ini in a ConfigMap.
func (p *k8sPod) readPHPIni(f *k8sFile) {
	for i, line := range strings.Split(f.data, "\n") {
		line = strings.TrimSpace(line)
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, ";") || strings.TrimSpace(k) != "memory_limit" {
			continue
		}
		p.iniFiles = append(p.iniFiles, f)
		p.memoryLimit = strings.Trim(strings.TrimSpace(stripIniComment(v)), `"'`)
		p.memoryLimitLoc = &Location{File: f.cm.doc.file, Line: f.line(i + 1), Text: fmt.Sprintf("%s  (%s line %d)", line, f.name(), i+1)}
	}
}

// fpmLoc quotes a php-fpm setting read from a ConfigMap.
func (p *k8sPod) fpmLoc(s fpm.Setting) *Location {
	f := p.fpmFiles[s.File]
	if f == nil || !s.IsSet() {
		return nil
	}
	return &Location{File: f.cm.doc.file, Line: f.line(s.Line), Text: fmt.Sprintf("%s = %s  (%s line %d)", s.Key, s.Raw, f.name(), s.Line)}
}

// poolLoc quotes a pool's section header.
func (p *k8sPod) poolLoc(pool *fpm.Pool) *Location {
	f := p.fpmFiles[pool.File]
	if f == nil {
		return nil
	}
	return &Location{File: f.cm.doc.file, Line: f.line(pool.Line), Text: fmt.Sprintf("[%s]  (%s line %d)", pool.Name, f.name(), pool.Line)}
}

// poolWhere says where to add a setting to a pool, for fixes.
func (p *k8sPod) poolWhere(pool *fpm.Pool) string {
	if l := p.poolLoc(pool); l != nil {
		return fmt.Sprintf("in pool [%s] (%s, under %s)", pool.Name, p.fpmFiles[pool.File].name(), l)
	}
	return fmt.Sprintf("in pool [%s]", pool.Name)
}

// settingWhere says where to change a setting, or where to add it.
func (p *k8sPod) settingWhere(pool *fpm.Pool, key string) string {
	if l := p.fpmLoc(pool.Settings[key]); l != nil {
		return "at " + l.String() + " set"
	}
	return p.poolWhere(pool) + " add"
}

// ngxLoc quotes an nginx directive read from a ConfigMap.
func (p *k8sPod) ngxLoc(cfg *nginxconf.Config, d *nginxconf.Directive) *Location {
	f := p.ngxFileOf[cfg]
	if f == nil || d == nil {
		return nil
	}
	return &Location{File: f.cm.doc.file, Line: f.line(d.Line), Text: fmt.Sprintf("%s  (%s line %d)", d.Text(), f.name(), d.Line)}
}

// summary says which containers play which part, so that a reader can
// tell when the doctor guessed wrong.
func (p *k8sPod) summary() {
	var parts []string
	for _, r := range []struct {
		role string
		kc   *k8sContainer
	}{{"nginx", p.nginx}, {"fcgiscope", p.fcgiscope}, {"php-fpm", p.fpm}} {
		if r.kc == nil {
			parts = append(parts, r.role+": none found")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s: %s (%s)", r.role, r.kc.what(), r.kc.c.Image))
	}
	var conf []string
	for _, cfg := range p.fpmConfs {
		f := p.fpmFiles[cfg.Path]
		var names []string
		for _, pool := range cfg.Pools {
			names = append(names, "["+pool.Name+"]")
		}
		conf = append(conf, fmt.Sprintf("php-fpm reads %s at %s (%s)", f.name(), f.path, orDefault(strings.Join(names, " "), "[global] only")))
	}
	for _, f := range p.iniFiles {
		conf = append(conf, fmt.Sprintf("PHP reads %s at %s", f.name(), f.path))
	}
	for _, f := range p.ngxFiles {
		conf = append(conf, fmt.Sprintf("nginx reads %s at %s", f.name(), f.path))
	}
	if p.fpm != nil && len(p.fpmConfs) == 0 {
		conf = append(conf, "php-fpm's configuration is not in a ConfigMap of these manifests: the checks that need its pool are skipped")
		p.k.c.notChecked("kubernetes: %s: php-fpm's pool configuration is in no ConfigMap given, so its socket, timeouts and memory could not be checked against it", p.w.name())
	}
	detail := strings.Join(parts, "; ") + "."
	if len(conf) > 0 {
		detail += " " + strings.Join(conf, "; ") + "."
	}
	p.k.c.add(Finding{ID: "k8s_pod", Severity: SeverityInfo,
		Title:  fmt.Sprintf("%s: the pod the checks below are about", p.w.name()),
		Detail: detail,
		K8s:    []*Location{p.doc.loc(p.w.at, p.w.name())}})
}
