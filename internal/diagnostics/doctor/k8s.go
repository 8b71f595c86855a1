package doctor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/nginxconf"
)

// The k8s*.go files check a Kubernetes manifest (Doctor.K8s): the pod that runs
// nginx, fcgiscope and php-fpm side by side, with the ConfigMaps that hold
// their configuration. Every document is decoded strictly into the API
// types of k8s.io/api, so that a misspelt field is reported rather than
// silently dropped, and every finding names the manifest's file and line.
//
// The lines come from go.yaml.in/yaml/v3, whose Node tree gives each key
// and sequence item its line (readYAMLDocs, indexYAML), indexed under the
// path sigs.k8s.io/json uses in its strict errors, such as
// spec.template.spec.containers[1].lifecycle. The values themselves are
// decoded by sigs.k8s.io/yaml and sigs.k8s.io/json, as kubectl decodes
// them.
//
// This file holds the entry, checkK8s, and the types. k8s_decode.go reads
// the files, k8s_fields.go explains the fields of the API types, k8s_pod.go
// and k8s_env.go find the pod's containers and their configuration, and
// k8s_socket.go, k8s_perm.go, k8s_probe.go, k8s_stop.go and k8s_memory.go
// check it.

// k8sServer is ConfigError.Server for a manifest that cannot be read.
const k8sServer = "k8s"

// ErrNoPod is returned by Check when the manifests of Doctor.K8s hold no
// Pod, Deployment, StatefulSet or DaemonSet, and nothing else was checked.
var ErrNoPod = errors.New("found no Pod, Deployment, StatefulSet or DaemonSet to check in")

// checkK8s reads the manifests named by Doctor.K8s and checks every pod
// in them. It fails with a *ConfigError when a manifest cannot be read, and
// with ErrNoPod when the files hold no pod and nothing else to report.
func (c *checkup) checkK8s() error {
	k := &k8sCheck{c: c}
	files, err := k8sFiles(c.d.K8s)
	if err != nil {
		return err
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			return &ConfigError{Server: k8sServer, Path: f, Err: err}
		}
		k.readFile(f, src)
	}
	if len(k.workloads) == 0 {
		if len(c.report.Findings) == 0 {
			return fmt.Errorf("%w: %s", ErrNoPod, strings.Join(files, ", "))
		}
		c.notChecked("kubernetes: no Pod, Deployment, StatefulSet or DaemonSet could be read from %s", strings.Join(files, ", "))
		return nil
	}
	for _, w := range k.workloads {
		k.checkWorkload(w)
	}
	return nil
}

// k8sFiles expands the paths given: a directory stands for its .yaml,
// .yml and .json files, as for kubectl apply -f.
func k8sFiles(paths []string) ([]string, error) {
	var files []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, &ConfigError{Server: k8sServer, Path: p, Err: err}
		}
		if !fi.IsDir() {
			files = append(files, p)
			continue
		}
		var in []string
		for _, ext := range []string{"*.yaml", "*.yml", "*.json"} {
			m, _ := filepath.Glob(filepath.Join(p, ext))
			in = append(in, m...)
		}
		if len(in) == 0 {
			return nil, &ConfigError{Server: k8sServer, Path: p, Err: errors.New("is a directory without .yaml, .yml or .json files")}
		}
		sort.Strings(in)
		files = append(files, in...)
	}
	return files, nil
}

// k8sCheck is one run over a set of manifests.
type k8sCheck struct {
	c          *checkup
	configMaps []*k8sConfigMap
	workloads  []*k8sWorkload
}

// k8sDoc is one YAML document of a manifest file.
type k8sDoc struct {
	file string
	idx  *yamlIndex
}

// line returns the line of path in the document, or of its nearest
// ancestor written in it.
func (d *k8sDoc) line(path string) int { return d.idx.line(path) }

// loc quotes the manifest at path.
func (d *k8sDoc) loc(path, text string) *Location {
	return &Location{File: d.file, Line: d.line(path), Text: text}
}

// where is "file:line" of path, for fixes.
func (d *k8sDoc) where(path string) string {
	return fmt.Sprintf("%s:%d", d.file, d.line(path))
}

type k8sConfigMap struct {
	doc *k8sDoc
	cm  *corev1.ConfigMap
}

// k8sWorkload is an object with a pod template, or a Pod.
type k8sWorkload struct {
	doc  *k8sDoc
	kind string
	meta *metav1.ObjectMeta
	spec *corev1.PodSpec
	// at is the path of the pod spec: spec.template.spec, or spec for a
	// Pod.
	at string
}

func (w *k8sWorkload) name() string { return w.kind + " " + w.meta.Name }

// ---- one pod ----

// k8sContainer is a container of the pod, with where it is written.
type k8sContainer struct {
	c  *corev1.Container
	at string
	// init is set for initContainers; sidecar for those of them with
	// restartPolicy Always, which run beside the containers.
	init, sidecar bool
}

func (kc *k8sContainer) what() string {
	switch {
	case kc.sidecar:
		return "native sidecar " + kc.c.Name
	case kc.init:
		return "init container " + kc.c.Name
	}
	return "container " + kc.c.Name
}

// k8sFile is a ConfigMap key as a container sees it.
type k8sFile struct {
	cm   *k8sConfigMap
	key  string
	path string
	data string
}

func (f *k8sFile) name() string { return fmt.Sprintf("ConfigMap %s, %s", f.cm.cm.Name, f.key) }

// line returns the manifest line of line n of the file.
func (f *k8sFile) line(n int) int { return f.cm.doc.idx.bodyLine("data."+f.key, n) }

// k8sPod is one pod template with the roles of its containers and the
// configuration its ConfigMaps give them.
type k8sPod struct {
	k    *k8sCheck
	w    *k8sWorkload
	doc  *k8sDoc
	spec *corev1.PodSpec

	fcgiscope, fpm, nginx *k8sContainer

	// fpmFiles are the php-fpm configuration files php-fpm's container
	// mounts from ConfigMaps, by the name given to fpm.Parse.
	fpmFiles map[string]*k8sFile
	fpmConfs []*fpm.Config
	pools    []*fpm.Pool
	// memoryLimit is memory_limit from a php.ini in a ConfigMap.
	memoryLimit    string
	memoryLimitLoc *Location
	iniFiles       []*k8sFile
	ngxFiles       []*k8sFile
	ngx            []*nginxconf.Config
	ngxFileOf      map[*nginxconf.Config]*k8sFile
}

// checkWorkload checks the pod of one workload.
func (k *k8sCheck) checkWorkload(w *k8sWorkload) {
	p := &k8sPod{k: k, w: w, doc: w.doc, spec: w.spec, fpmFiles: map[string]*k8sFile{}, ngxFileOf: map[*nginxconf.Config]*k8sFile{}}
	p.findRoles()
	if p.fcgiscope == nil && p.fpm == nil {
		k.c.notChecked("kubernetes: %s (%s) runs neither fcgiscope nor php-fpm", w.name(), p.doc.where(w.at))
		return
	}
	p.readConfigMaps()
	p.summary()
	p.checkSidecar()
	p.checkSockets()
	p.checkProbes()
	p.checkStopSignal()
	p.checkGrace()
	p.checkShutdownOrder()
	p.checkMemory()
}
