package examples_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/front"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/fcgitest"
	"github.com/fcgiscope/fcgiscope/internal/httpgateway"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
	"github.com/fcgiscope/fcgiscope/internal/phpfpm"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// The files the stack is made of, relative to examples/.
const (
	nginxSiteFile   = "nginx/docker.conf"
	nginxHostFile   = "nginx/fcgiscope.conf"
	fpmPoolFile     = "php-fpm/zzz-fcgiscope.conf"
	composeFile     = "../docker-compose.yml"
	dockerfile      = "../Dockerfile"
	k8sDir          = "kubernetes"
	adminPort       = 9180
	fcgiscopeUID    = "65532"
	nginxGID        = "101"
	nginxConfigMap  = "fcgiscope-nginx"
	fpmConfigMap    = "fcgiscope-php-fpm"
	nginxConfigKey  = "default.conf"
	fpmConfigKey    = "zzz-fcgiscope.conf"
	fcgiscopeImage  = "fcgiscope:dev"
	demoPHPImage    = "fcgiscope-demo-php:dev"
	officialPHP     = "php:8.2-fpm"
	shutdownTimeout = "FCGISCOPE_SHUTDOWN_TIMEOUT"
)

func read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.FromSlash(name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ---- Kubernetes ----

// manifests are the decoded objects of examples/kubernetes.
type manifests struct {
	deployments []*appsv1.Deployment
	configMaps  map[string]*corev1.ConfigMap
	services    []*corev1.Service
}

// splitYAML splits a multi-document YAML file.
func splitYAML(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(b), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(d, "")) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

// decodeManifest decodes one document strictly into the API type of its
// kind: an unknown or misspelt field, or a duplicate key, is an error.
func decodeManifest(doc []byte, m *manifests) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 Deployment":
		d := &appsv1.Deployment{}
		m.deployments = append(m.deployments, d)
		obj = d
	case "v1 ConfigMap":
		c := &corev1.ConfigMap{}
		obj = c
		defer func() { m.configMaps[c.Name] = c }()
	case "v1 Service":
		s := &corev1.Service{}
		m.services = append(m.services, s)
		obj = s
	default:
		return fmt.Errorf("unexpected object %q %q", tm.APIVersion, tm.Kind)
	}
	return yaml.UnmarshalStrict(doc, obj)
}

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", k8sDir, err)
	}
	m := &manifests{configMaps: map[string]*corev1.ConfigMap{}}
	for _, f := range files {
		for i, doc := range splitYAML(read(t, f)) {
			if err := decodeManifest(doc, m); err != nil {
				t.Errorf("%s, document %d: %v", f, i+1, err)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return m
}

func TestStrictDecodingCatchesMistakes(t *testing.T) {
	doc := read(t, filepath.Join(k8sDir, "deployment.yaml"))
	for _, mistake := range []struct{ from, to string }{
		{"containerPort: 9180", "containerPrt: 9180"},
		{"readinessProbe:", "readynessProbe:"},
		{"  replicas: 2\n", "  replicas: 2\n  replicas: 3\n"},
	} {
		bad := strings.Replace(string(doc), mistake.from, mistake.to, 1)
		if bad == string(doc) {
			t.Fatalf("%q is not in the deployment", mistake.from)
		}
		if err := decodeManifest([]byte(bad), &manifests{configMaps: map[string]*corev1.ConfigMap{}}); err == nil {
			t.Errorf("%q -> %q decoded without error", mistake.from, mistake.to)
		}
	}
}

// container returns the container or init container (a native sidecar
// is one) called name.
func container(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for _, list := range [][]corev1.Container{spec.Containers, spec.InitContainers} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

// names lists the containers' names, comma-separated.
func names(cs []corev1.Container) string {
	var n []string
	for _, c := range cs {
		n = append(n, c.Name)
	}
	return strings.Join(n, ",")
}

func envOf(c *corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}

// mountOf returns the mount that holds file in c.
func mountOf(c *corev1.Container, file string) *corev1.VolumeMount {
	var best *corev1.VolumeMount
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		if file == m.MountPath || strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") {
			if best == nil || len(m.MountPath) > len(best.MountPath) {
				best = m
			}
		}
	}
	return best
}

func volume(spec *corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

// configMapFile returns the ConfigMap and key that c sees at file.
func configMapFile(t *testing.T, spec *corev1.PodSpec, c *corev1.Container, file string) (cm, key string) {
	t.Helper()
	m := mountOf(c, file)
	if m == nil {
		t.Fatalf("container %s has no volume at %s", c.Name, file)
	}
	v := volume(spec, m.Name)
	if v == nil || v.ConfigMap == nil {
		t.Fatalf("container %s: %s is not from a ConfigMap", c.Name, file)
	}
	key = m.SubPath
	if key == "" {
		key = strings.TrimPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
	}
	for _, it := range v.ConfigMap.Items {
		if it.Path == key {
			key = it.Key
		}
	}
	return v.ConfigMap.Name, key
}

// portNumber resolves a probe's port in c.
func portNumber(c *corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return -1
}

// ---- nginx and php-fpm configuration ----

// nginxSite is what the stack needs to agree on in an nginx site.
type nginxSite struct {
	upstream fcgi.Addr // where fastcgi_pass sends requests
	root     string
	keepConn bool
	keepaliv bool
}

var (
	commentRe  = regexp.MustCompile(`(?m)#.*$`)
	upstreamRe = regexp.MustCompile(`(?s)upstream\s+(\S+)\s*\{(.*?)\}`)
	serverRe   = regexp.MustCompile(`\bserver\s+([^;\s]+)`)
	passRe     = regexp.MustCompile(`\bfastcgi_pass\s+([^;\s]+)\s*;`)
	rootRe     = regexp.MustCompile(`(?m)^\s*root\s+([^;\s]+)\s*;`)
)

func parseNginxSite(t *testing.T, name, conf string) nginxSite {
	t.Helper()
	conf = commentRe.ReplaceAllString(conf, "")
	upstreams := map[string]string{}
	for _, m := range upstreamRe.FindAllStringSubmatch(conf, -1) {
		if s := serverRe.FindStringSubmatch(m[2]); s != nil {
			upstreams[m[1]] = s[1]
		}
	}
	passes := passRe.FindAllStringSubmatch(conf, -1)
	if len(passes) != 1 {
		t.Fatalf("%s: %d active fastcgi_pass lines, want 1", name, len(passes))
	}
	target := passes[0][1]
	if u, ok := upstreams[target]; ok {
		target = u
	}
	addr, err := fcgi.ParseAddr(target)
	if err != nil {
		t.Fatalf("%s: fastcgi_pass %s: %v", name, target, err)
	}
	site := nginxSite{upstream: addr, keepConn: regexp.MustCompile(`\bfastcgi_keep_conn\s+on\s*;`).MatchString(conf),
		keepaliv: regexp.MustCompile(`\bkeepalive\s+\d+\s*;`).MatchString(conf)}
	if m := rootRe.FindStringSubmatch(conf); m != nil {
		site.root = m[1]
	}
	return site
}

// parsePool reads a pool file with fcgiscope's own php-fpm parser, the one
// the classifier uses.
func parsePool(t *testing.T, name string, src []byte) (*fpm.Config, *fpm.Pool) {
	t.Helper()
	conf := fpm.Parse(name, src, func(string) (string, bool) { return "", false })
	if len(conf.Warnings) > 0 {
		t.Errorf("%s: %v", name, conf.Warnings)
	}
	if len(conf.Pools) != 1 {
		t.Fatalf("%s: %d pools, want 1", name, len(conf.Pools))
	}
	return conf, conf.Pools[0]
}

func TestPoolHasTheSettingsFcgiscopeReads(t *testing.T) {
	conf, pool := parsePool(t, fpmPoolFile, read(t, fpmPoolFile))
	if pool.ListenAddr.Network != "unix" || pool.ListenOwner != fcgiscopeUID || pool.ListenMode != "0660" {
		t.Errorf("listen %s owner %q mode %q, want a unix socket for uid %s, 0660", pool.ListenAddr, pool.ListenOwner, pool.ListenMode, fcgiscopeUID)
	}
	if pool.PM == "" || pool.MaxChildren == 0 || pool.RequestTerminateTimeout == 0 || pool.RequestSlowlogTimeout == 0 ||
		pool.RequestSlowlogTimeout >= pool.RequestTerminateTimeout || pool.Slowlog == "" || !pool.CatchWorkersOutput ||
		pool.StatusPath == "" || pool.PingPath == "" || conf.ErrorLog == "" {
		t.Errorf("pool lacks a setting fcgiscope reads: %+v, error_log %q", pool, conf.ErrorLog)
	}
	for _, f := range []string{nginxSiteFile, nginxHostFile} {
		src := string(read(t, f))
		ft := regexp.MustCompile(`\bfastcgi_read_timeout\s+(\d+)s;`).FindStringSubmatch(src)
		if ft == nil {
			t.Errorf("%s sets no fastcgi_read_timeout", f)
			continue
		}
		if n, _ := strconv.Atoi(ft[1]); time.Duration(n)*time.Second <= pool.RequestTerminateTimeout {
			t.Errorf("%s: fastcgi_read_timeout %ss is not above request_terminate_timeout %s: nginx would give up before php-fpm's kill is explained", f, ft[1], pool.RequestTerminateTimeout)
		}
	}
}

func TestNginxSitesUseKeptAliveConnections(t *testing.T) {
	for _, f := range []string{nginxSiteFile, nginxHostFile} {
		site := parseNginxSite(t, f, string(read(t, f)))
		if !site.keepConn || !site.keepaliv {
			t.Errorf("%s: fastcgi_keep_conn on %v, keepalive %v; want both", f, site.keepConn, site.keepaliv)
		}
	}
	// The host site shows both transports.
	src := commentRe.ReplaceAllString(string(read(t, nginxHostFile)), "")
	var kinds []string
	for _, m := range upstreamRe.FindAllStringSubmatch(src, -1) {
		if s := serverRe.FindStringSubmatch(m[2]); s != nil {
			a, err := fcgi.ParseAddr(s[1])
			if err != nil {
				t.Errorf("%s: upstream %s: %v", nginxHostFile, m[1], err)
			}
			kinds = append(kinds, a.Network)
		}
	}
	if strings.Join(kinds, ",") != "tcp,unix" {
		t.Errorf("%s upstreams are %v, want one tcp and one unix", nginxHostFile, kinds)
	}
	// The TCP one is where fcgiscope serve listens by default.
	if site := parseNginxSite(t, nginxHostFile, string(read(t, nginxHostFile))); site.upstream.String() != "127.0.0.1:9001" {
		t.Errorf("%s passes to %s, want fcgiscope's default 127.0.0.1:9001", nginxHostFile, site.upstream)
	}
}

func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	if len(m.deployments) != 1 || len(m.services) != 1 {
		t.Fatalf("%d deployments and %d services, want one each", len(m.deployments), len(m.services))
	}
	d := m.deployments[0]
	spec := &d.Spec.Template.Spec
	// fcgiscope is a native sidecar (Kubernetes 1.29+): started before
	// nginx and php-fpm, after the files are copied, and stopped after
	// both have exited, so that it relays their last answers.
	if got := names(spec.Containers); got != "nginx,php-fpm" {
		t.Fatalf("containers %s, want nginx,php-fpm", got)
	}
	if got := names(spec.InitContainers); got != "copy-code,fcgiscope" {
		t.Fatalf("init containers %s, want copy-code,fcgiscope", got)
	}
	nginx, scope, php := container(t, spec, "nginx"), container(t, spec, "fcgiscope"), container(t, spec, "php-fpm")
	if rp := scope.RestartPolicy; rp == nil || *rp != corev1.ContainerRestartPolicyAlways {
		t.Errorf("fcgiscope's restartPolicy is %v, want Always: without it an init container must exit before nginx and php-fpm start", rp)
	}
	if rp := container(t, spec, "copy-code").RestartPolicy; rp != nil {
		t.Errorf("copy-code's restartPolicy is %s: it must run to completion", *rp)
	}
	env := envOf(scope)

	t.Run("labels and service", func(t *testing.T) {
		labels := d.Spec.Template.Labels
		for k, v := range d.Spec.Selector.MatchLabels {
			if labels[k] != v {
				t.Errorf("selector %s=%s does not match the pod's labels %v", k, v, labels)
			}
		}
		svc := m.services[0]
		for k, v := range svc.Spec.Selector {
			if labels[k] != v {
				t.Errorf("service selector %s=%s does not match the pod's labels %v", k, v, labels)
			}
		}
		for _, p := range svc.Spec.Ports {
			if n := portNumber(nginx, p.TargetPort); n <= 0 {
				t.Errorf("service port %s targets %s, which nginx does not expose", p.Name, p.TargetPort.String())
			}
		}
	})

	t.Run("probes on the admin port", func(t *testing.T) {
		if env["FCGISCOPE_ADMIN_LISTEN"] != fmt.Sprintf("0.0.0.0:%d", adminPort) {
			t.Errorf("FCGISCOPE_ADMIN_LISTEN=%q: the kubelet probes the pod's IP, so listen on 0.0.0.0:%d", env["FCGISCOPE_ADMIN_LISTEN"], adminPort)
		}
		for _, p := range []struct {
			probe *corev1.Probe
			path  string
		}{{scope.LivenessProbe, "/healthz"}, {scope.ReadinessProbe, "/readyz"}} {
			if p.probe == nil || p.probe.HTTPGet == nil {
				t.Errorf("fcgiscope has no HTTP probe for %s", p.path)
				continue
			}
			if p.probe.HTTPGet.Path != p.path || portNumber(scope, p.probe.HTTPGet.Port) != adminPort {
				t.Errorf("probe %s on port %s, want %s on %d", p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path, adminPort)
			}
		}
		for _, c := range []*corev1.Container{nginx, php} {
			if c.ReadinessProbe == nil {
				t.Errorf("%s has no readiness probe", c.Name)
			}
		}
		// nginx and php-fpm start once the sidecar's startupProbe passes,
		// so it must not wait for php-fpm as /readyz does.
		if p := scope.StartupProbe; p == nil || p.HTTPGet == nil {
			t.Errorf("fcgiscope has no HTTP startupProbe: nginx could start before fcgiscope listens")
		} else if p.HTTPGet.Path != "/healthz" || portNumber(scope, p.HTTPGet.Port) != adminPort {
			t.Errorf("fcgiscope's startupProbe asks %s on port %s, want /healthz on %d (/readyz waits for php-fpm, which starts only after the probe passes)", p.HTTPGet.Path, p.HTTPGet.Port.String(), adminPort)
		}
	})

	t.Run("prometheus annotations", func(t *testing.T) {
		a := d.Spec.Template.Annotations
		if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(adminPort) || a["prometheus.io/path"] != "/metrics" {
			t.Errorf("annotations %v", a)
		}
	})

	t.Run("resources", func(t *testing.T) {
		all := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
		for _, c := range all {
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				req, okReq := c.Resources.Requests[r]
				lim, okLim := c.Resources.Limits[r]
				if !okReq || !okLim {
					t.Errorf("%s: %s request %v limit %v; want both", c.Name, r, okReq, okLim)
					continue
				}
				if req.Cmp(lim) > 0 {
					t.Errorf("%s: %s request %s above limit %s", c.Name, r, req.String(), lim.String())
				}
			}
		}
		if lim := scope.Resources.Limits[corev1.ResourceMemory]; lim.Cmp(resource.MustParse("64Mi")) < 0 {
			t.Errorf("fcgiscope's memory limit %s is too small", lim.String())
		}
	})

	t.Run("configuration files are the examples'", func(t *testing.T) {
		want := map[string]map[string]string{
			nginxConfigMap: {nginxConfigKey: string(read(t, nginxSiteFile))},
			fpmConfigMap:   {fpmConfigKey: string(read(t, fpmPoolFile))},
		}
		for name, data := range want {
			cm := m.configMaps[name]
			if cm == nil {
				t.Errorf("no ConfigMap %s", name)
				continue
			}
			for k, v := range data {
				if cm.Data[k] != v {
					t.Errorf("ConfigMap %s key %s differs from the file in examples/; copy the file in", name, k)
				}
			}
		}
	})

	t.Run("addresses agree", func(t *testing.T) {
		cm, key := configMapFile(t, spec, nginx, "/etc/nginx/conf.d/"+nginxConfigKey)
		siteText := m.configMaps[cm].Data[key]
		site := parseNginxSite(t, cm+"/"+key, siteText)
		// fcgiscope reads the site nginx runs, from a mount that follows
		// the ConfigMap's edits.
		if ncm, nkey := configMapFile(t, spec, scope, env["FCGISCOPE_NGINX_CONFIG"]); ncm != cm || nkey != key {
			t.Errorf("FCGISCOPE_NGINX_CONFIG is %s/%s in the ConfigMaps, nginx runs %s/%s", ncm, nkey, cm, key)
		}
		if mt := mountOf(scope, env["FCGISCOPE_NGINX_CONFIG"]); mt != nil && mt.SubPath != "" {
			t.Errorf("fcgiscope mounts nginx's site with subPath %s: a subPath mount never sees the ConfigMap change", mt.SubPath)
		}
		cm, key = configMapFile(t, spec, php, "/usr/local/etc/php-fpm.d/"+fpmConfigKey)
		fpmConf, pool := parsePool(t, cm+"/"+key, []byte(m.configMaps[cm].Data[key]))
		checkStack(t, stack{
			site: site, siteText: siteText, pool: pool, poolErrorLog: fpmConf.ErrorLog, env: env,
			mounts: func(container, file string) string {
				c := map[string]*corev1.Container{"nginx": nginx, "fcgiscope": scope, "php-fpm": php}[container]
				if mt := mountOf(c, file); mt != nil {
					return mt.Name + ":" + mt.MountPath
				}
				return ""
			},
		})
		// fcgiscope reads the pool file php-fpm runs with.
		scm, skey := configMapFile(t, spec, scope, env["FCGISCOPE_FPM_CONFIG"])
		if scm != cm || skey != key {
			t.Errorf("FCGISCOPE_FPM_CONFIG is %s/%s in the ConfigMaps, php-fpm runs %s/%s", scm, skey, cm, key)
		}
		if !strings.Contains(strings.Join(php.Command, " "), env["FCGISCOPE_FPM_LOG"]) {
			t.Errorf("php-fpm's command %q does not create %s readable for fcgiscope", php.Command, env["FCGISCOPE_FPM_LOG"])
		}
	})

	t.Run("users", func(t *testing.T) {
		sc := scope.SecurityContext
		if sc == nil || sc.RunAsUser == nil || sc.RunAsGroup == nil || strconv.FormatInt(*sc.RunAsUser, 10) != fcgiscopeUID ||
			strconv.FormatInt(*sc.RunAsGroup, 10) != nginxGID || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("fcgiscope must run as %s:%s (php-fpm's listen.owner, nginx's group): %+v", fcgiscopeUID, nginxGID, sc)
		}
		if nsc := nginx.SecurityContext; nsc == nil || nsc.RunAsGroup == nil || strconv.FormatInt(*nsc.RunAsGroup, 10) != nginxGID {
			t.Errorf("nginx must run with group %s to use fcgiscope's 0660 socket", nginxGID)
		}
		if scope.Image != fcgiscopeImage || php.Image != demoPHPImage {
			t.Errorf("images %s and %s, want %s and %s (the Dockerfile's targets)", scope.Image, php.Image, fcgiscopeImage, demoPHPImage)
		}
		// php-fpm hands its socket to fcgiscope's user; nginx may use
		// fcgiscope's socket through the group they share.
		_, pool, _ := phpFPMView(t, m, spec, php)
		if sc := scope.SecurityContext; sc != nil && sc.RunAsUser != nil && pool.ListenOwner != strconv.FormatInt(*sc.RunAsUser, 10) {
			t.Errorf("php-fpm gives its socket to %q, fcgiscope runs as %d", pool.ListenOwner, *sc.RunAsUser)
		}
		if pool.ListenMode != "0660" {
			t.Errorf("php-fpm's listen.mode is %q, want 0660: its owner, fcgiscope, may connect, nobody else", pool.ListenMode)
		}
		if sc, nsc := scope.SecurityContext, nginx.SecurityContext; sc != nil && nsc != nil && sc.RunAsGroup != nil && nsc.RunAsGroup != nil && *sc.RunAsGroup != *nsc.RunAsGroup {
			t.Errorf("fcgiscope's group %d is not nginx's %d: nginx may not use its 0660 socket", *sc.RunAsGroup, *nsc.RunAsGroup)
		}
	})

	// Each socket is on an emptyDir that its creator may write and its
	// users see (checkStack checks that they share the volume).
	t.Run("sockets volume", func(t *testing.T) {
		for _, s := range []struct {
			env           string
			creator, user *corev1.Container
		}{{"FCGISCOPE_LISTEN", scope, nginx}, {"FCGISCOPE_UPSTREAM", php, scope}} {
			addr, err := fcgi.ParseAddr(env[s.env])
			if err != nil || addr.Network != "unix" {
				t.Errorf("%s=%s: want a unix socket (%v)", s.env, env[s.env], err)
				continue
			}
			for _, c := range []*corev1.Container{s.creator, s.user} {
				mt := mountOf(c, addr.Address)
				if mt == nil {
					t.Errorf("%s does not mount %s's directory", c.Name, addr.Address)
					continue
				}
				if v := volume(spec, mt.Name); v == nil || v.EmptyDir == nil {
					t.Errorf("%s is on volume %s, not an emptyDir of the pod", addr.Address, mt.Name)
				}
				if c == s.creator && mt.ReadOnly {
					t.Errorf("%s mounts %s read-only and cannot create %s", c.Name, mt.MountPath, addr.Address)
				}
			}
		}
	})

	t.Run("grace period covers the drain", func(t *testing.T) {
		drain, err := time.ParseDuration(env[shutdownTimeout])
		if err != nil {
			t.Fatalf("%s=%q: %v", shutdownTimeout, env[shutdownTimeout], err)
		}
		if g := spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= drain {
			t.Errorf("terminationGracePeriodSeconds %v is not above %s=%s", g, shutdownTimeout, drain)
		}
	})

	// What e2e/k8s_shutdown_test.go plays with real processes: the
	// endpoint drains during the preStop sleeps, nginx and php-fpm get
	// SIGQUIT, and fcgiscope, stopped last, relays their last answers.
	t.Run("graceful stop", func(t *testing.T) {
		conf, pool, files := phpFPMView(t, m, spec, php)
		if conf.ProcessControlTimeout <= pool.RequestTerminateTimeout {
			t.Errorf("process_control_timeout %s (in %v) is not above request_terminate_timeout %s: on SIGQUIT php-fpm kills the requests still running after it (0, the default, kills them at once)",
				conf.ProcessControlTimeout, files, pool.RequestTerminateTimeout)
		}
		var drain time.Duration
		for _, c := range []*corev1.Container{nginx, php} {
			d := preStopSleep(c)
			if d <= 0 {
				t.Errorf("%s has no preStop sleep: it would stop while the Service still sends it requests", c.Name)
			}
			drain = max(drain, d)
			if sig, why := stopSignal(t, c); sig != "SIGQUIT" {
				t.Errorf("%s's stop signal is %s (%s), want SIGQUIT, its graceful stop", c.Name, sig, why)
			}
		}
		if preStopSleep(scope) > 0 {
			t.Errorf("fcgiscope has a preStop hook: a sidecar's runs when the pod's deletion begins, and it is stopped last anyway")
		}
		// The signal reaches the process 1 of the container.
		if cmd := strings.Join(php.Command, " "); !strings.Contains(cmd, "exec php-fpm") {
			t.Errorf("php-fpm's command %q does not exec php-fpm: the stop signal would reach the shell", cmd)
		}
		grace := time.Duration(0)
		if g := spec.TerminationGracePeriodSeconds; g != nil {
			grace = time.Duration(*g) * time.Second
		}
		if grace <= drain+pool.RequestTerminateTimeout {
			t.Errorf("terminationGracePeriodSeconds %s is not above the preStop drain %s plus request_terminate_timeout %s", grace, drain, pool.RequestTerminateTimeout)
		}
		if grace <= drain+conf.ProcessControlTimeout {
			t.Errorf("terminationGracePeriodSeconds %s is not above the preStop drain %s plus process_control_timeout %s: the kubelet's SIGKILL would come first", grace, drain, conf.ProcessControlTimeout)
		}
	})
}

// phpFPMView parses the php-fpm configuration as the php-fpm container
// reads it: every file of a ConfigMap mounted into php-fpm.d, in name
// order, as php-fpm's include takes them. It returns the configuration,
// its one pool and the files.
func phpFPMView(t *testing.T, m *manifests, spec *corev1.PodSpec, php *corev1.Container) (*fpm.Config, *fpm.Pool, []string) {
	t.Helper()
	const dir = "/usr/local/etc/php-fpm.d/"
	var files []string
	for _, mt := range php.VolumeMounts {
		if strings.HasPrefix(mt.MountPath, dir) {
			files = append(files, mt.MountPath)
		}
	}
	slices.Sort(files)
	var src strings.Builder
	for _, f := range files {
		cm, key := configMapFile(t, spec, php, f)
		text, ok := m.configMaps[cm].Data[key]
		if !ok {
			t.Fatalf("php-fpm mounts %s from %s/%s, which does not exist", f, cm, key)
		}
		src.WriteString(text)
	}
	conf, pool := parsePool(t, strings.Join(files, "+"), []byte(src.String()))
	return conf, pool, files
}

// preStopSleep returns how long c's preStop hook sleeps, by the sleep
// action or by an exec of sleep.
func preStopSleep(c *corev1.Container) time.Duration {
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
		return 0
	}
	h := c.Lifecycle.PreStop
	if h.Sleep != nil {
		return time.Duration(h.Sleep.Seconds) * time.Second
	}
	if h.Exec != nil {
		if m := regexp.MustCompile(`(?:^|[\s;])sleep\s+(\d+)`).FindStringSubmatch(strings.Join(h.Exec.Command, " ")); m != nil {
			n, _ := strconv.Atoi(m[1])
			return time.Duration(n) * time.Second
		}
	}
	return 0
}

// imageStopSignals are the STOPSIGNAL of the images the example runs that
// are not built here: nginx's images, official and unprivileged, stop on
// SIGQUIT, nginx's graceful stop.
var imageStopSignals = map[string]string{"nginxinc/nginx-unprivileged": "SIGQUIT", "nginx": "SIGQUIT"}

// stopSignal returns the signal the kubelet stops c with, and why: the
// container's lifecycle.stopSignal (Kubernetes 1.33+ with the
// ContainerStopSignals feature gate), else the image's STOPSIGNAL, which
// containerd and CRI-O send; for the image built by the repository's
// Dockerfile, that of its stage or of the image the stage is FROM.
func stopSignal(t *testing.T, c *corev1.Container) (sig, why string) {
	t.Helper()
	if c.Lifecycle != nil && c.Lifecycle.StopSignal != nil {
		return string(*c.Lifecycle.StopSignal), "lifecycle.stopSignal"
	}
	repo, _, _ := strings.Cut(c.Image, ":")
	if s, ok := imageStopSignals[repo]; ok {
		return s, c.Image + "'s STOPSIGNAL"
	}
	if c.Image != demoPHPImage {
		return "SIGTERM", "no stopSignal, and nothing known of " + c.Image + "'s STOPSIGNAL"
	}
	// The demo-php stage: its own STOPSIGNAL, else its base image's; the
	// official php:*-fpm images set SIGQUIT.
	var from, own string
	in := false
	for _, line := range strings.Split(string(read(t, dockerfile)), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && strings.EqualFold(f[0], "FROM") {
			in = len(f) == 4 && strings.EqualFold(f[2], "AS") && f[3] == "demo-php"
			if in {
				from = f[1]
			}
		} else if in && len(f) == 2 && strings.EqualFold(f[0], "STOPSIGNAL") {
			own = f[1]
		}
	}
	switch {
	case own != "":
		return own, "the demo-php stage's STOPSIGNAL"
	case regexp.MustCompile(`^php:[^ ]*fpm`).MatchString(from):
		return "SIGQUIT", "the STOPSIGNAL of " + from + ", the demo-php stage's base"
	}
	return "SIGTERM", "the demo-php stage's base " + from + " sets no known STOPSIGNAL"
}

// stack is what the containers of a deployment, compose or Kubernetes,
// must agree on.
type stack struct {
	site nginxSite
	// siteText is the nginx site, as fcgiscope reads it through
	// FCGISCOPE_NGINX_CONFIG.
	siteText     string
	pool         *fpm.Pool
	poolErrorLog string
	env          map[string]string
	// mounts names the volume (as "volume:mountpoint") that holds file in
	// container, or "".
	mounts func(container, file string) string
}

func checkStack(t *testing.T, s stack) {
	t.Helper()
	listen, err := fcgi.ParseAddr(s.env["FCGISCOPE_LISTEN"])
	if err != nil {
		t.Fatalf("FCGISCOPE_LISTEN: %v", err)
	}
	upstream, err := fcgi.ParseAddr(s.env["FCGISCOPE_UPSTREAM"])
	if err != nil {
		t.Fatalf("FCGISCOPE_UPSTREAM: %v", err)
	}
	if s.site.upstream != listen {
		t.Errorf("nginx passes to %s, fcgiscope listens on %s", s.site.upstream, listen)
	}
	if s.pool.ListenAddr != upstream {
		t.Errorf("fcgiscope's upstream is %s, php-fpm listens on %s", upstream, s.pool.ListenAddr)
	}
	if listen == upstream {
		t.Errorf("fcgiscope listens on its own upstream %s", listen)
	}
	shared := func(file string, containers ...string) {
		var vols []string
		for _, c := range containers {
			vols = append(vols, s.mounts(c, file))
		}
		for _, v := range vols {
			if v == "" || v != vols[0] {
				t.Errorf("%s is not on one volume shared by %v: %v", file, containers, vols)
				return
			}
		}
	}
	shared(listen.Address, "nginx", "fcgiscope")
	shared(upstream.Address, "fcgiscope", "php-fpm")
	if s.env["FCGISCOPE_FPM_LOG"] != s.poolErrorLog {
		t.Errorf("FCGISCOPE_FPM_LOG=%s, php-fpm's error_log is %s", s.env["FCGISCOPE_FPM_LOG"], s.poolErrorLog)
	}
	shared(s.poolErrorLog, "fcgiscope", "php-fpm")
	// fcgiscope finds, in nginx's site, the location that passes to it.
	conf := filepath.Join(t.TempDir(), "default.conf")
	if err := os.WriteFile(conf, []byte(s.siteText), 0o644); err != nil {
		t.Fatal(err)
	}
	if f := front.Load(conf, listen); !f.Known() {
		t.Errorf("fcgiscope does not find in nginx's site where it passes to %s: %s", listen, f.Describe())
	}
	if mode := s.env["FCGISCOPE_LISTEN_MODE"]; mode != "0660" {
		t.Errorf("FCGISCOPE_LISTEN_MODE=%q, want 0660 with nginx's group", mode)
	}
	if s.site.root == "" || s.mounts("nginx", path.Join(s.site.root, "index.php")) == "" {
		t.Errorf("nginx's root %q is not mounted in the nginx container", s.site.root)
	}
}

// ---- docker-compose.yml ----

// The parts of the Compose file format the example uses. Decoding with
// unknown fields disallowed catches a misspelt key.
type composeProject struct {
	Name     string                    `json:"name"`
	Services map[string]composeService `json:"services"`
	Volumes  map[string]*struct {
		Driver     string            `json:"driver"`
		DriverOpts map[string]string `json:"driver_opts"`
	} `json:"volumes"`
}

type composeService struct {
	Image       string            `json:"image"`
	Build       string            `json:"build"`
	Command     []string          `json:"command"`
	User        string            `json:"user"`
	Environment map[string]string `json:"environment"`
	Ports       []string          `json:"ports"`
	Volumes     []string          `json:"volumes"`
	DependsOn   map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on"`
	Healthcheck *struct {
		Test        []string `json:"test"`
		Interval    string   `json:"interval"`
		Timeout     string   `json:"timeout"`
		Retries     int      `json:"retries"`
		StartPeriod string   `json:"start_period"`
	} `json:"healthcheck"`
	StopGracePeriod string `json:"stop_grace_period"`
	Restart         string `json:"restart"`
}

func loadCompose(t *testing.T) *composeProject {
	t.Helper()
	j, err := yaml.YAMLToJSONStrict(read(t, composeFile))
	if err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	var p composeProject
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	return &p
}

// composeMount is one "source:target[:ro]" entry.
type composeMount struct{ source, target string }

func composeMounts(s composeService) []composeMount {
	var ms []composeMount
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		ms = append(ms, composeMount{parts[0], parts[1]})
	}
	return ms
}

func (p *composeProject) mountOf(service, file string) *composeMount {
	var best *composeMount
	for _, m := range composeMounts(p.Services[service]) {
		if file == m.target || strings.HasPrefix(file, strings.TrimSuffix(m.target, "/")+"/") {
			if best == nil || len(m.target) > len(best.target) {
				best = &m
			}
		}
	}
	return best
}

// hostFile returns the repository file that service sees at file.
func (p *composeProject) hostFile(t *testing.T, service, file string) string {
	t.Helper()
	m := p.mountOf(service, file)
	if m == nil || !strings.HasPrefix(m.source, "./") {
		t.Fatalf("%s: %s is not a file of the repository", service, file)
	}
	// Paths in the compose file are relative to the repository root.
	return path.Join("..", strings.TrimPrefix(m.source, "./"), strings.TrimPrefix(file, m.target))
}

func TestComposeFile(t *testing.T) {
	p := loadCompose(t)
	for _, name := range []string{"nginx", "fcgiscope", "php-fpm"} {
		s, ok := p.Services[name]
		if !ok {
			t.Fatalf("no service %q", name)
		}
		if s.Healthcheck == nil || len(s.Healthcheck.Test) < 2 || s.Healthcheck.Test[0] != "CMD" {
			t.Errorf("%s: no healthcheck", name)
		}
		for dep, c := range s.DependsOn {
			if _, ok := p.Services[dep]; !ok || c.Condition != "service_healthy" {
				t.Errorf("%s depends on %s (%q)", name, dep, c.Condition)
			}
		}
		for _, port := range s.Ports {
			if !strings.HasPrefix(port, "127.0.0.1:") {
				t.Errorf("%s publishes %s beyond this machine", name, port)
			}
		}
		for _, m := range composeMounts(s) {
			if !strings.HasPrefix(m.source, "./") && !strings.HasPrefix(m.source, "/") && p.Volumes[m.source] == nil {
				t.Errorf("%s mounts undeclared volume %s", name, m.source)
			}
			if strings.HasPrefix(m.source, "./") {
				if _, err := os.Stat(filepath.Join("..", m.source)); err != nil {
					t.Errorf("%s mounts %s: %v", name, m.source, err)
				}
			}
		}
	}
	scope := p.Services["fcgiscope"]
	if !contains(scope.Ports, fmt.Sprintf("127.0.0.1:%d:%d", adminPort, adminPort)) {
		t.Errorf("fcgiscope publishes %v; want the admin port %d on 127.0.0.1", scope.Ports, adminPort)
	}
	if scope.Build != "." || scope.Image != fcgiscopeImage {
		t.Errorf("fcgiscope is built from %q as %q, want . as %s", scope.Build, scope.Image, fcgiscopeImage)
	}
	if scope.User != fcgiscopeUID+":"+nginxGID {
		t.Errorf("fcgiscope runs as %q, want %s:%s (php-fpm's listen.owner, nginx's group)", scope.User, fcgiscopeUID, nginxGID)
	}
	if p.Services["php-fpm"].Image != officialPHP {
		t.Errorf("php-fpm image %q, want the official %s", p.Services["php-fpm"].Image, officialPHP)
	}

	nginxFile := p.hostFile(t, "nginx", "/etc/nginx/conf.d/default.conf")
	if nginxFile != path.Join("..", "examples", nginxSiteFile) {
		t.Errorf("nginx runs %s, not %s (the Kubernetes ConfigMap's)", nginxFile, nginxSiteFile)
	}
	site := parseNginxSite(t, nginxFile, string(read(t, nginxFile)))
	poolFile := p.hostFile(t, "php-fpm", "/usr/local/etc/php-fpm.d/"+fpmConfigKey)
	conf, pool := parsePool(t, poolFile, read(t, poolFile))
	if got := p.hostFile(t, "fcgiscope", scope.Environment["FCGISCOPE_FPM_CONFIG"]); got != poolFile {
		t.Errorf("fcgiscope reads %s, php-fpm runs %s", got, poolFile)
	}
	if got := p.hostFile(t, "fcgiscope", scope.Environment["FCGISCOPE_NGINX_CONFIG"]); got != nginxFile {
		t.Errorf("fcgiscope reads %s as nginx's site, nginx runs %s", got, nginxFile)
	}
	checkStack(t, stack{site: site, siteText: string(read(t, nginxFile)), pool: pool, poolErrorLog: conf.ErrorLog, env: scope.Environment,
		mounts: func(service, file string) string {
			if m := p.mountOf(service, file); m != nil {
				return m.source + ":" + m.target
			}
			return ""
		}})
	if !strings.Contains(strings.Join(p.Services["php-fpm"].Command, " "), scope.Environment["FCGISCOPE_FPM_LOG"]) {
		t.Errorf("php-fpm's command does not create %s readable for fcgiscope", scope.Environment["FCGISCOPE_FPM_LOG"])
	}
	// Code at the same path for nginx and php-fpm: SCRIPT_FILENAME is
	// built by nginx and opened by php-fpm.
	if a, b := p.mountOf("nginx", site.root), p.mountOf("php-fpm", site.root); a == nil || b == nil || a.source != b.source {
		t.Errorf("nginx's root %s is not the same directory in php-fpm", site.root)
	}

	// Compose and Kubernetes run fcgiscope with the same settings, but
	// for who counts as local: on Docker the browser on this machine
	// comes through the bridge; in a cluster every visitor comes through
	// the ingress from a private address, and none may be trusted.
	m := loadManifests(t)
	k8s := envOf(container(t, &m.deployments[0].Spec.Template.Spec, "fcgiscope"))
	compose := maps.Clone(scope.Environment)
	if compose["FCGISCOPE_TRUSTED_NETWORKS"] == "" || k8s["FCGISCOPE_TRUSTED_NETWORKS"] != "" {
		t.Errorf("FCGISCOPE_TRUSTED_NETWORKS: compose %q, kubernetes %q; want Docker's bridge trusted on Docker, nothing in a cluster", compose["FCGISCOPE_TRUSTED_NETWORKS"], k8s["FCGISCOPE_TRUSTED_NETWORKS"])
	}
	delete(compose, "FCGISCOPE_TRUSTED_NETWORKS")
	if fmt.Sprint(k8s) != fmt.Sprint(compose) {
		t.Errorf("fcgiscope's environment differs:\n  compose    %v\n  kubernetes %v", compose, k8s)
	}
	if k8sNginx := container(t, &m.deployments[0].Spec.Template.Spec, "nginx").Image; k8sNginx != p.Services["nginx"].Image {
		t.Errorf("nginx image: compose %s, kubernetes %s", p.Services["nginx"].Image, k8sNginx)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestDockerfile(t *testing.T) {
	src := string(read(t, dockerfile))
	var froms []string
	for _, line := range strings.Split(src, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && strings.EqualFold(f[0], "FROM") {
			froms = append(froms, strings.Join(f[1:], " "))
		}
	}
	if len(froms) < 2 {
		t.Fatalf("FROM lines %v: want a multi-stage build", froms)
	}
	if !strings.HasPrefix(froms[0], "golang:${GO_VERSION}") || !strings.Contains(src, "ARG GO_VERSION=1.26") {
		t.Errorf("builder %q: want golang:1.26", froms[0])
	}
	final := froms[len(froms)-1]
	if !strings.HasPrefix(final, "gcr.io/distroless/static") && final != "scratch" {
		t.Errorf("final stage %q: want distroless static or scratch", final)
	}
	if !contains(froms, officialPHP+" AS demo-php") {
		t.Errorf("no demo-php stage FROM %s for the Kubernetes example: %v", officialPHP, froms)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X main.version=", "./cmd/fcgiscope"} {
		if !strings.Contains(src, want) {
			t.Errorf("the build lacks %s", want)
		}
	}
	users := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindAllStringSubmatch(src, -1)
	if len(users) == 0 || strings.HasPrefix(users[len(users)-1][1], "0") || strings.HasPrefix(users[len(users)-1][1], "root") {
		t.Errorf("USER %v: want a non-root user", users)
	} else if u := strings.Split(users[len(users)-1][1], ":")[0]; u != fcgiscopeUID {
		t.Errorf("USER %s, but the examples give php-fpm's socket to %s", u, fcgiscopeUID)
	}
}

// ---- running the configurations ----

// TestNginxAcceptsTheSites runs nginx -t on both sites.
func TestNginxAcceptsTheSites(t *testing.T) {
	bin := testbed.RequireNginx(t)
	dir := testbed.ShortTempDir(t)
	params, err := os.ReadFile("/etc/nginx/fastcgi_params")
	if err != nil {
		t.Skipf("SKIPPING: no /etc/nginx/fastcgi_params for the sites' include: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "fastcgi_params"), params, 0o644)
	for _, site := range []string{nginxSiteFile, nginxHostFile} {
		abs, _ := filepath.Abs(site)
		conf := fmt.Sprintf(`pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events {}
http {
    access_log off;
    client_body_temp_path %[1]s/b; fastcgi_temp_path %[1]s/f; proxy_temp_path %[1]s/p; uwsgi_temp_path %[1]s/u; scgi_temp_path %[1]s/s;
    include %[2]s;
}
`, dir, abs)
		os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644)
		out, err := exec.Command(bin, "-t", "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log")).CombinedOutput()
		if err != nil {
			t.Errorf("nginx -t with %s: %v\n%s", site, err, out)
		}
	}
}

// TestPHPFPMRunsThePool starts php-fpm with the example pool, moved into a
// temporary directory, and checks the socket's owner and the ping and status
// pages fcgiscope uses.
func TestPHPFPMRunsThePool(t *testing.T) {
	bin := testbed.RequireFPM(t)
	if os.Geteuid() != 0 {
		t.Skip("SKIPPING: the pool gives its socket to uid 65532 and runs workers as www-data, which needs root")
	}
	dir := testbed.ShortTempDir(t)
	src := string(read(t, fpmPoolFile))
	src = strings.NewReplacer("/var/log/php-fpm/", dir+"/log/", "/sockets/", dir+"/").Replace(src)
	os.Mkdir(filepath.Join(dir, "log"), 0o755)
	conf := filepath.Join(dir, "php-fpm.conf")
	os.WriteFile(conf, []byte("[global]\npid = "+dir+"/php-fpm.pid\ndaemonize = no\n"+src), 0o644)
	if out, err := exec.Command(bin, "-t", "-y", conf).CombinedOutput(); err != nil {
		t.Fatalf("php-fpm -t: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-F", "-y", conf)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() {
		cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	sock := filepath.Join(dir, "php-fpm.sock")
	addr := fcgi.Addr{Network: "unix", Address: sock}
	var pong *fcgitest.Response
	for deadline := time.Now().Add(10 * time.Second); ; {
		var err error
		pong, err = fcgitest.Do(context.Background(), addr, &fcgitest.Request{Params: fpm.PageParams("/fpm-ping", "")})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("php-fpm did not answer: %v\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.HasSuffix(string(pong.Stdout), "pong") {
		t.Errorf("ping: %q", pong.Stdout)
	}
	status, err := fcgitest.Do(context.Background(), addr, &fcgitest.Request{Params: fpm.PageParams("/fpm-status", "json")})
	if err != nil || !strings.Contains(string(status.Stdout), `"pool":"www"`) {
		t.Errorf("status: %v %q", err, status.Stdout)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(sock, &st); err != nil || strconv.Itoa(int(st.Uid)) != fcgiscopeUID || st.Mode&0o777 != 0o660 {
		t.Errorf("socket uid %d mode %o, want uid %s mode 0660 (%v)", st.Uid, st.Mode&0o777, fcgiscopeUID, err)
	}
	// The configuration fcgiscope reads is the one php-fpm runs.
	loaded, err := fpm.Load(conf, nil)
	if err != nil || loaded.PoolFor(addr) == nil {
		t.Errorf("fcgiscope's parser finds no pool on %s: %v", addr, err)
	}
}

// TestKubernetesPHPFPMAcceptsTheConfigMap runs php-fpm -t on the files the
// php-fpm container loads from its ConfigMap, in the order it loads them,
// and checks that php-fpm reads the stop settings the pod relies on.
func TestKubernetesPHPFPMAcceptsTheConfigMap(t *testing.T) {
	bin := testbed.RequireFPM(t)
	if os.Geteuid() != 0 {
		t.Skip("SKIPPING: the pool gives its socket to uid 65532 and runs workers as www-data, which needs root")
	}
	m := loadManifests(t)
	spec := &m.deployments[0].Spec.Template.Spec
	conf, _, files := phpFPMView(t, m, spec, container(t, spec, "php-fpm"))
	dir := testbed.ShortTempDir(t)
	os.Mkdir(filepath.Join(dir, "log"), 0o755)
	var src strings.Builder
	src.WriteString("[global]\npid = " + dir + "/php-fpm.pid\ndaemonize = no\n")
	for _, f := range files {
		cm, key := configMapFile(t, spec, container(t, spec, "php-fpm"), f)
		src.WriteString(m.configMaps[cm].Data[key])
	}
	main := filepath.Join(dir, "php-fpm.conf")
	os.WriteFile(main, []byte(strings.NewReplacer("/var/log/php-fpm/", dir+"/log/", "/sockets/", dir+"/").Replace(src.String())), 0o644)
	out, err := exec.Command(bin, "-t", "-y", main).CombinedOutput()
	if err != nil {
		t.Fatalf("php-fpm -t: %v\n%s", err, out)
	}
	// php-fpm -tt prints the configuration it understood.
	out, _ = exec.Command(bin, "-tt", "-y", main).CombinedOutput()
	want := fmt.Sprintf("process_control_timeout = %ds", int(conf.ProcessControlTimeout/time.Second))
	if !strings.Contains(string(out), want) {
		t.Errorf("php-fpm -tt does not say %q:\n%s", want, out)
	}
}

// TestSystemdUnits runs systemd-analyze verify on the units and checks the
// sandboxing the service promises.
func TestSystemdUnits(t *testing.T) {
	service := string(read(t, "systemd/fcgiscope.service"))
	socket := string(read(t, "systemd/fcgiscope.socket"))
	for _, want := range []string{
		"DynamicUser=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes",
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service",
		"RuntimeDirectory=fcgiscope",
	} {
		if !strings.Contains(service, want) {
			t.Errorf("fcgiscope.service lacks %q", strings.TrimSpace(want))
		}
	}
	listen := regexp.MustCompile(`(?m)^Environment=FCGISCOPE_LISTEN=unix:(\S+)$`).FindStringSubmatch(service)
	stream := regexp.MustCompile(`(?m)^ListenStream=(\S+)$`).FindStringSubmatch(socket)
	if listen == nil || stream == nil || listen[1] != stream[1] {
		t.Errorf("the socket unit listens on %v, the service on %v", stream, listen)
	}
	if listen != nil && !strings.HasPrefix(listen[1], "/run/fcgiscope/") {
		t.Errorf("the service's socket %s is not in its RuntimeDirectory", listen[1])
	}
	host := parseNginxSite(t, nginxHostFile, strings.Replace(string(read(t, nginxHostFile)), "fastcgi_pass fcgiscope_tcp;", "fastcgi_pass fcgiscope_unix;", 1))
	if listen != nil && host.upstream.Address != listen[1] {
		t.Errorf("%s's unix upstream is %s, the service listens on %s", nginxHostFile, host.upstream, listen[1])
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("SKIPPING systemd-analyze verify: systemd-analyze is not installed")
	}
	dir := t.TempDir()
	// verify wants ExecStart's binary to exist.
	os.WriteFile(filepath.Join(dir, "fcgiscope.service"), []byte(strings.ReplaceAll(service, "/usr/local/bin/fcgiscope", "/bin/true")), 0o644)
	os.WriteFile(filepath.Join(dir, "fcgiscope.socket"), []byte(socket), 0o644)
	cmd := exec.Command(analyze, "verify", "fcgiscope.service", "fcgiscope.socket")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	var problems []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "fcgiscope.") {
			problems = append(problems, line)
		}
	}
	if err != nil || len(problems) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, strings.Join(problems, "\n"))
	}
}

// ---- the demo pages ----

// outcomes records each request's cause, as the access log names it.
type outcomes struct {
	mu sync.Mutex
	m  map[string]pageOutcome
}

type pageOutcome struct {
	cause     string
	truncated bool
	bytesIn   int64
}

func (o *outcomes) Record(t *outcome.Trace, d *diagnostics.Diagnosis) {
	id := "ok"
	if d != nil {
		id = d.Cause.ID
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.m[t.RequestID] = pageOutcome{id, t.Truncated, t.BytesIn}
}

func (o *outcomes) wait(t *testing.T, id string) pageOutcome {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		o.mu.Lock()
		oc, ok := o.m[id]
		o.mu.Unlock()
		if ok {
			return oc
		}
		if time.Now().After(deadline) {
			t.Fatalf("no trace for request %q", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDemoPagesBehaveAsTheIndexSays serves examples/php with fcgiscope http's
// gateway and a php-fpm like --fpm auto's (with a 2 s terminate timeout, to
// keep the test short) and checks each page's promise.
func TestDemoPagesBehaveAsTheIndexSays(t *testing.T) {
	bin := testbed.RequireFPM(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fpmCfg := phpfpm.Development()
	fpmCfg.Binary, fpmCfg.MaxChildren = bin, 3
	fpmCfg.RequestTerminateTimeout, fpmCfg.SlowlogTimeout = 2*time.Second, time.Second
	php, err := phpfpm.Start(ctx, fpmCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer php.Stop(5 * time.Second)
	conf, err := fpm.Load(php.ConfigPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	follower := &fpm.Follower{Path: php.ErrorLog}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); follower.Run(ctx) }()
	defer wg.Wait()
	defer cancel()
	classifier := &diagnostics.Classifier{Pool: conf.PoolFor(php.Addr), Log: follower, LogWait: time.Second}
	rec := &outcomes{m: map[string]pageOutcome{}}
	explainer := &diagnostics.Explainer{Classifier: classifier, Sinks: []diagnostics.Sink{rec}}
	root, _ := filepath.Abs("php")
	g := &httpgateway.Gateway{Root: root, Upstream: php.Addr, TryFiles: true, HoldBytes: 64 << 10,
		Responder: explainer, Observer: explainer}
	srv := httptest.NewServer(g)
	defer srv.Close()

	t.Run("index links to pages that exist", func(t *testing.T) {
		resp, err := http.Get(srv.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		links := regexp.MustCompile(`href="([^"?]+)`).FindAllStringSubmatch(string(body), -1)
		if len(links) < 10 {
			t.Fatalf("%d links on the index:\n%s", len(links), body)
		}
		for _, l := range links {
			if l[1] == "missing.php" || l[1] == "any/route" {
				continue
			}
			if _, err := os.Stat(filepath.Join("php", l[1])); err != nil {
				t.Errorf("the index links to %s: %v", l[1], err)
			}
		}
	})

	tests := []struct {
		page   string
		body   string // sent with POST when set
		status int    // 0: the transfer must be cut off
		cause  string
		text   string
	}{
		{"/hello.php", "", 200, "ok", "hello from php-fpm"},
		{"/slow.php?s=0.3", "", 200, "ok", "slept 0.3s"},
		{"/segfault.php", "", 502, "worker_crashed", "SIGSEGV"},
		{"/killed.php", "", 0, "worker_crashed", ""},
		{"/killed.php?stream=0", "", 502, "worker_crashed", "SIGKILL"},
		{"/memory.php", "", 500, "memory_exhausted", ""},
		{"/fatal.php", "", 500, "php_fatal_error", ""},
		{"/bigheader.php", "", 200, "ok", "10 KiB cookie sent"},
		{"/missing.php", "", 404, "script_not_found", "File not found."},
		{"/any/route?x=1", "", 200, "ok", "Routed here by the front controller"},
		{"/upload.php?rate=4096", strings.Repeat("u", 256<<10), 200, "ok", "read 262144 bytes"},
		{"/timeout.php?s=6", "", 502, "worker_timeout_killed", "request_terminate_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.page, func(t *testing.T) {
			method, body := "GET", io.Reader(nil)
			if tt.body != "" {
				method, body = "POST", strings.NewReader(tt.body)
			}
			req, _ := http.NewRequest(method, srv.URL+tt.page, body)
			req.Header.Set("Accept", "text/plain")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, readErr := io.ReadAll(resp.Body)
			resp.Body.Close()
			oc := rec.wait(t, resp.Header.Get("X-Fcgiscope-Request-Id"))
			if tt.status == 0 {
				if readErr == nil || !oc.truncated {
					t.Errorf("the transfer was not cut off: read error %v, truncated %v", readErr, oc.truncated)
				}
			} else if resp.StatusCode != tt.status || readErr != nil {
				t.Errorf("status %d (%v), want %d:\n%s", resp.StatusCode, readErr, tt.status, b)
			}
			if oc.cause != tt.cause {
				t.Errorf("cause %s, want %s:\n%s", oc.cause, tt.cause, b)
			}
			if !strings.Contains(string(b), tt.text) {
				t.Errorf("the page does not say %q:\n%s", tt.text, b)
			}
			if tt.page == "/bigheader.php" {
				if c := resp.Cookies(); len(c) != 1 || len(c[0].Value) != 10<<10 {
					t.Errorf("the 10 KiB cookie did not arrive whole")
				}
			}
		})
	}

	// What the index says of nginx with its default buffers.
	t.Run("bigheader.php through nginx", func(t *testing.T) {
		ngx := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: php.Addr.String(), Root: root})
		resp, err := http.Get(ngx.URL + "/bigheader.php")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 502 {
			t.Errorf("nginx with default fastcgi_buffer_size: %d, want 502", resp.StatusCode)
		}
		for deadline := time.Now().Add(3 * time.Second); ; {
			log, _ := os.ReadFile(ngx.ErrorLog)
			if strings.Contains(string(log), "upstream sent too big header") {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("nginx's error log does not say \"upstream sent too big header\":\n%s", log)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}
