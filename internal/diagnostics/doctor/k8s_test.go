package doctor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	yamlv3 "go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// k8sWant is one finding a manifest must produce: its id and severity, a
// piece of its title, the manifest lines it must point at ("file:line",
// the file relative to testdata/k8s) and a piece of its fix.
type k8sWant struct {
	id       string
	severity Severity
	title    string
	at       []string
	fix      string
}

func checkManifest(t *testing.T, files ...string) *Report {
	t.Helper()
	var paths []string
	for _, f := range files {
		paths = append(paths, filepath.Join("testdata", "k8s", f))
	}
	r, err := (&Doctor{K8s: paths}).Check(context.Background())
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return r
}

// k8sLines returns a finding's manifest locations as "file:line", the
// file relative to testdata/k8s.
func k8sLines(f Finding) []string {
	var out []string
	for _, l := range f.K8s {
		out = append(out, fmt.Sprintf("%s:%d", strings.TrimPrefix(filepath.ToSlash(l.File), "testdata/k8s/"), l.Line))
	}
	return out
}

func TestK8sManifests(t *testing.T) {
	tests := []struct {
		file string
		want []k8sWant
		// absent are ids that must not appear.
		absent []string
		// notChecked are pieces of NotChecked entries that must appear.
		notChecked []string
	}{
		{
			file: "broken-manifest.yaml",
			want: []k8sWant{
				{"k8s_unknown_field", SeverityError, `Unknown field "lifecyle" in spec.template.spec.containers[0]`,
					[]string{"broken-manifest.yaml:21"}, "At testdata/k8s/broken-manifest.yaml:21 rename lifecyle to lifecycle."},
				{"k8s_unknown_field", SeverityError, `Unknown field "containerPrt"`,
					[]string{"broken-manifest.yaml:20"}, "rename containerPrt to containerPort"},
				{"k8s_unknown_field", SeverityError, `Unknown field "terminationGracePeriod" in spec.template.spec`,
					[]string{"broken-manifest.yaml:15"}, "`kubectl explain deployment.spec.template.spec` lists the fields"},
				{"k8s_manifest", SeverityError, "broken-manifest.yaml:32 is not valid YAML",
					[]string{"broken-manifest.yaml:32"}, "Correct the YAML at testdata/k8s/broken-manifest.yaml:32"},
				{"k8s_manifest", SeverityError, "a value of the wrong type",
					[]string{"broken-manifest.yaml:39"}, "kubectl explain deployment.spec.replicas"},
				{"k8s_manifest", SeverityError, "Deployment has apiVersion extensions/v1beta1; Kubernetes serves Deployment as apps/v1",
					[]string{"broken-manifest.yaml:52"}, "At testdata/k8s/broken-manifest.yaml:52 write\n    apiVersion: apps/v1"},
			},
			notChecked: []string{"broken-manifest.yaml:64 is a List"},
		},
		{
			file: "broken-sockets.yaml",
			want: []k8sWant{
				{"k8s_socket", SeverityError, "php-fpm's socket unix:/sockets/php-fpm.sock is on no volume shared with fcgiscope",
					[]string{"broken-sockets.yaml:12", "broken-sockets.yaml:62", "broken-sockets.yaml:56"},
					"Mount volume sockets in fcgiscope too, where the other container has it; add to its volumeMounts (testdata/k8s/broken-sockets.yaml:56)\n      - name: sockets\n        mountPath: /sockets"},
				{"k8s_socket", SeverityError, "fcgiscope's socket unix:/sockets/fcgiscope.sock is on no volume shared with nginx",
					[]string{"broken-sockets.yaml:60", "broken-sockets.yaml:29"}, "Mount volume sockets in fcgiscope too"},
				{"k8s_socket", SeverityError, "fcgiscope and nginx name different files for fcgiscope's socket",
					[]string{"broken-sockets.yaml:109", "broken-sockets.yaml:120"}, "the same subPath, or none"},
				{"k8s_socket", SeverityError, "fcgiscope's upstream unix:/sockets/php.sock is no address php-fpm listens on",
					[]string{"broken-sockets.yaml:165", "broken-sockets.yaml:12"}, "Point FCGISCOPE_UPSTREAM (testdata/k8s/broken-sockets.yaml:165) at unix:/sockets/php-fpm.sock"},
				{"k8s_socket", SeverityError, "is on volume sockets, which is read-only",
					[]string{"broken-sockets.yaml:189"}, "emptyDir:\n          medium: Memory"},
				{"k8s_sidecar", SeverityWarning, "fcgiscope is a regular container of Deployment unshared",
					[]string{"broken-sockets.yaml:56"}, "from containers to initContainers and add\n    restartPolicy: Always"},
			},
			absent: []string{"k8s_socket_permission"},
		},
		{
			file: "broken-perms.yaml",
			want: []k8sWant{
				{"k8s_socket_permission", SeverityError, "fcgiscope (uid 65532, gid 65532) may not connect to php-fpm's socket unix:/sockets/php-fpm.sock",
					[]string{"broken-perms.yaml:12", "broken-perms.yaml:13", "broken-perms.yaml:14", "broken-perms.yaml:68", "broken-perms.yaml:69"},
					"at testdata/k8s/broken-perms.yaml:13 set\n    listen.owner = 65532"},
				{"k8s_socket_permission", SeverityError, "nginx (uid 101, gid 101) may not connect to fcgiscope's socket unix:/sockets/fcgiscope.sock",
					[]string{"broken-perms.yaml:57", "broken-perms.yaml:27", "broken-perms.yaml:69"},
					"in its securityContext (testdata/k8s/broken-perms.yaml:67) set\n    runAsGroup: 101"},
				{"k8s_probe", SeverityError, "readinessProbe cannot reach the admin endpoint: it listens on 127.0.0.1:9180",
					[]string{"broken-perms.yaml:64"}, "FCGISCOPE_ADMIN_LISTEN=0.0.0.0:9180"},
			},
		},
		{
			file: "broken-probes.yaml",
			want: []k8sWant{
				{"k8s_probe", SeverityError, "livenessProbe cannot reach the admin endpoint: it listens on 127.0.0.1:9180, loopback only",
					[]string{"broken-probes.yaml:33", "broken-probes.yaml:26"}, "FCGISCOPE_ADMIN_LISTEN=0.0.0.0:9180, with FCGISCOPE_ADMIN_TOKEN"},
				{"k8s_probe", SeverityError, "livenessProbe asks /health, which fcgiscope answers with 404",
					[]string{"broken-probes.yaml:79"}, "At testdata/k8s/broken-probes.yaml:79 use\n    path: /healthz"},
				{"k8s_probe", SeverityWarning, "readinessProbe asks /metrics, which is no health check",
					[]string{"broken-probes.yaml:83"}, "path: /readyz"},
				{"k8s_probe", SeverityWarning, "livenessProbe asks /readyz",
					[]string{"broken-probes.yaml:129"}, "path: /healthz\nand keep /readyz for the readinessProbe"},
				{"k8s_probe", SeverityWarning, "readinessProbe asks /healthz, which passes with php-fpm down",
					[]string{"broken-probes.yaml:133"}, "path: /readyz"},
				{"k8s_probe", SeverityError, "startupProbe asks /readyz, but as a native sidecar it must pass before php-fpm starts",
					[]string{"broken-probes.yaml:125", "broken-probes.yaml:113"}, "path: /healthz"},
				{"k8s_admin_listen", SeverityError, "fcgiscope refuses to start: its admin endpoint 0.0.0.0:9180 is reachable from other hosts without a token",
					[]string{"broken-probes.yaml:170"}, "secretKeyRef"},
				{"k8s_probe", SeverityError, "readinessProbe goes to port 8080; its admin endpoint listens on 0.0.0.0:9180",
					[]string{"broken-probes.yaml:174"}, "probe port 9180"},
			},
			absent: []string{"k8s_socket", "k8s_socket_permission", "k8s_stop_signal", "k8s_process_control_timeout", "k8s_termination_grace"},
		},
		{
			file: "broken-shutdown.yaml",
			want: []k8sWant{
				{"k8s_stop_signal", SeverityError, "stopSignal needs spec.os.name",
					[]string{"broken-shutdown.yaml:40"}, "os:\n      name: linux"},
				{"k8s_stop_signal", SeverityWarning, "php-fpm is stopped with SIGTERM, which makes it stop at once",
					[]string{"broken-shutdown.yaml:40"}, "At testdata/k8s/broken-shutdown.yaml:40 set\n    stopSignal: SIGQUIT"},
				{"k8s_termination_grace", SeverityWarning, "terminationGracePeriodSeconds (30s) is not longer than php-fpm's preStop (0s) plus request_terminate_timeout (60s)",
					[]string{"broken-shutdown.yaml:29", "broken-shutdown.yaml:13"}, "At testdata/k8s/broken-shutdown.yaml:29 add\n    terminationGracePeriodSeconds: 70"},
				{"k8s_shutdown_order", SeverityWarning, "nginx's preStop waits 10s, php-fpm's 0s",
					[]string{"broken-shutdown.yaml:36", "broken-shutdown.yaml:37"}, "sleep:\n          seconds: 10"},
				{"k8s_stop_signal", SeverityWarning, "php-fpm runs under a shell",
					[]string{"broken-shutdown.yaml:69"}, "exec php-fpm"},
				{"k8s_process_control_timeout", SeverityWarning, "process_control_timeout is 0",
					[]string{"broken-shutdown.yaml:68", "broken-shutdown.yaml:13"}, "process_control_timeout = 60s"},
				{"k8s_stop_signal", SeverityWarning, "preStop sends SIGQUIT but does not wait",
					[]string{"broken-shutdown.yaml:101"}, "while kill -0 1"},
				{"k8s_shutdown_order", SeverityWarning, "nginx's preStop waits 15s, php-fpm's 0s",
					[]string{"broken-shutdown.yaml:132", "broken-shutdown.yaml:138"}, "start its command with sleep 15;"},
			},
		},
		{
			file: "broken-memory.yaml",
			want: []k8sWant{
				{"k8s_memory_limit", SeverityWarning, "php-fpm's workers may use 5.0 GiB at full load; its container's memory limit is 1Gi",
					[]string{"broken-memory.yaml:45", "broken-memory.yaml:13", "broken-memory.yaml:20"},
					"At testdata/k8s/broken-memory.yaml:13 set\n    pm.max_children = 3"},
			},
		},
		{
			file: "broken-sidecar.yaml",
			want: []k8sWant{
				{"k8s_sidecar", SeverityError, "fcgiscope is a plain init container of DaemonSet sidecar: the pod never starts",
					[]string{"broken-sidecar.yaml:28"}, "restartPolicy: Always"},
				{"k8s_socket_permission", SeverityError, "nginx (uid 101, gid 101) may not connect to fcgiscope's socket",
					[]string{"broken-sidecar.yaml:9", "broken-sidecar.yaml:42"}, "runAsGroup: 101"},
			},
			absent: []string{"k8s_probe", "k8s_admin_listen"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			r := checkManifest(t, tc.file)
			var text bytes.Buffer
			r.WriteText(&text, false)
			t.Log("\n" + text.String())
			for _, w := range tc.want {
				var f *Finding
				for i := range r.Findings {
					if r.Findings[i].ID == w.id && r.Findings[i].Severity == w.severity && strings.Contains(r.Findings[i].Title, w.title) {
						f = &r.Findings[i]
						break
					}
				}
				if f == nil {
					t.Errorf("no %s finding %s with title %q", w.severity, w.id, w.title)
					continue
				}
				lines := k8sLines(*f)
				for _, at := range w.at {
					if !contains(lines, at) {
						t.Errorf("%s %q: locations %v, want %s among them", w.id, f.Title, lines, at)
					}
				}
				if !strings.Contains(f.Fix, w.fix) {
					t.Errorf("%s %q: fix\n%s\nwant it to say\n%s", w.id, f.Title, f.Fix, w.fix)
				}
			}
			for _, f := range r.Findings {
				if contains(tc.absent, f.ID) {
					t.Errorf("unexpected %s finding: %s", f.ID, f.Title)
				}
			}
			for _, n := range tc.notChecked {
				if !strings.Contains(strings.Join(r.NotChecked, "\n"), n) {
					t.Errorf("not checked %q, want %q among them", r.NotChecked, n)
				}
			}
			everyFindingHasALine(t, r)
		})
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// everyFindingHasALine checks that each finding points into a manifest,
// and that the line it names exists.
func everyFindingHasALine(t *testing.T, r *Report) {
	t.Helper()
	lines := map[string]int{}
	for _, f := range r.Findings {
		if len(f.K8s) == 0 {
			t.Errorf("%s %q names no place in the manifest", f.ID, f.Title)
		}
		for _, l := range f.K8s {
			if _, ok := lines[l.File]; !ok {
				b, err := os.ReadFile(l.File)
				if err != nil {
					t.Fatal(err)
				}
				lines[l.File] = bytes.Count(b, []byte("\n"))
			}
			if l.Line < 1 || l.Line > lines[l.File] {
				t.Errorf("%s %q: %s is not a line of the file", f.ID, f.Title, l)
			}
		}
		if f.Severity != SeverityInfo && f.Fix == "" {
			t.Errorf("%s %q has no fix", f.ID, f.Title)
		}
	}
}

func TestK8sGoodManifest(t *testing.T) {
	r := checkManifest(t, "good.yaml")
	var text bytes.Buffer
	r.WriteText(&text, false)
	t.Log("\n" + text.String())
	for _, f := range r.Findings {
		if f.Severity != SeverityInfo {
			t.Errorf("%s %s: %s", f.Severity, f.ID, f.Title)
		}
	}
	if len(r.NotChecked) > 0 {
		t.Errorf("not checked: %q", r.NotChecked)
	}
	var pod *Finding
	for i := range r.Findings {
		if r.Findings[i].ID == "k8s_pod" {
			pod = &r.Findings[i]
		}
	}
	if pod == nil {
		t.Fatal("no k8s_pod finding")
	}
	for _, s := range []string{"fcgiscope: native sidecar fcgiscope", "php-fpm: container php-fpm", "nginx: container nginx", "ConfigMap app-php-fpm, zzz-app.conf", "ConfigMap app-nginx, default.conf"} {
		if !strings.Contains(pod.Detail, s) {
			t.Errorf("k8s_pod says %q, want %q in it", pod.Detail, s)
		}
	}
	if got := k8sLines(*pod); len(got) != 1 || got[0] != "good.yaml:66" {
		t.Errorf("k8s_pod at %v, want good.yaml:66 (the pod spec)", got)
	}
	if !strings.Contains(text.String(), "    k8s:     testdata/k8s/good.yaml:66  Deployment app\n") {
		t.Errorf("the text report does not print the manifest location as k8s:")
	}
}

// TestK8sProcessControlTimeoutText keeps the message true to php-src:
// with process_control_timeout = 0 php-fpm's master escalates SIGQUIT to
// SIGTERM on the next turn of its event loop (fpm_pctl_action_next,
// fpm_pctl_timeout_set(0)); 0 does not mean to wait forever.
func TestK8sProcessControlTimeoutText(t *testing.T) {
	r := checkManifest(t, "broken-shutdown.yaml")
	for _, f := range r.Findings {
		if f.ID != "k8s_process_control_timeout" {
			continue
		}
		for _, s := range []string{"escalates to SIGTERM", "after process_control_timeout seconds", "With 0, php-fpm's default, that timer is due at once", "0 does not mean to wait without limit"} {
			if !strings.Contains(f.Detail, s) {
				t.Errorf("detail %q lacks %q", f.Detail, s)
			}
		}
		return
	}
	t.Fatal("no k8s_process_control_timeout finding")
}

func TestK8sErrors(t *testing.T) {
	_, err := (&Doctor{K8s: []string{"testdata/k8s/missing.yaml"}}).Check(context.Background())
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Server != "k8s" || ce.Path != "testdata/k8s/missing.yaml" || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing manifest: %v, want a *ConfigError for k8s", err)
	}
	dir := t.TempDir()
	_, err = (&Doctor{K8s: []string{dir}}).Check(context.Background())
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "without .yaml") {
		t.Errorf("empty directory: %v, want a *ConfigError", err)
	}
	svc := filepath.Join(dir, "svc.yaml")
	os.WriteFile(svc, []byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n"), 0o644)
	if _, err := (&Doctor{K8s: []string{svc}}).Check(context.Background()); !errors.Is(err, ErrNoPod) {
		t.Errorf("a Service alone: %v, want ErrNoPod", err)
	}
	// A directory is read as kubectl apply -f reads it: its manifests
	// together, so that a ConfigMap in one file serves a Deployment in
	// another.
	for _, f := range []string{"good.yaml"} {
		b, err := os.ReadFile(filepath.Join("testdata", "k8s", f))
		if err != nil {
			t.Fatal(err)
		}
		docs := strings.Split(string(b), "\n---\n")
		os.WriteFile(filepath.Join(dir, "a-configmaps.yaml"), []byte(docs[0]+"\n---\n"+docs[1]+"\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "b-deployment.yaml"), []byte(strings.Join(docs[2:], "\n---\n")), 0o644)
	}
	r, err := (&Doctor{K8s: []string{dir}}).Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range r.Findings {
		if f.Severity != SeverityInfo {
			t.Errorf("split good manifest: %s %s: %s", f.Severity, f.ID, f.Title)
		}
	}
	if len(r.NotChecked) > 0 {
		t.Errorf("split good manifest: not checked %q", r.NotChecked)
	}
}

// TestK8sWithHost checks that --k8s with --fpm checks both.
func TestK8sWithHost(t *testing.T) {
	d := fixture(t, "", debianFPMConf)
	d.K8s = []string{"testdata/k8s/broken-memory.yaml"}
	r, err := d.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var k8s, host bool
	for _, f := range r.Findings {
		if strings.HasPrefix(f.ID, "k8s_") {
			k8s = true
		} else {
			host = true
		}
	}
	if !k8s || !host || r.FPM == "" {
		t.Errorf("k8s findings %v, host findings %v, php-fpm read %q: want both checked", k8s, host, r.FPM)
	}
}

// TestIndexYAML checks the lines yaml.v3's nodes give the paths of a
// document, here the second of its file.
func TestIndexYAML(t *testing.T) {
	first := "kind: First\n" + strings.Repeat("# filler\n", 7) + "---\n" // lines 1 to 9
	src := `# comment
apiVersion: v1
kind: Pod
metadata:
  name: x
  annotations:
    "example.com/quoted": "yes"   # comment
spec:
  containers:
  - name: a
    args: ["serve",
      "--listen=unix:/x.sock"]
    env:
      - name: A
        value: |
          line one
          line two: not a key
      - {name: B, value: b}
    command:
    - sh
    - -c
    - >
      folded
  - name: b
    ports:
      - - nested
        - deeper
    lifecycle:
      preStop: &hook
        exec:
          command: ['it''s', "x"]
    readinessProbe: *hook
  volumes: []
data:
  php.ini: |-
    memory_limit = 64M

    max_execution_time = 30
`
	docs := readYAMLDocs([]byte(first + src))
	if len(docs) != 2 || docs[1].err != "" {
		t.Fatalf("docs %+v, want two without error", docs)
	}
	if docs[1].first != 9 || !strings.HasPrefix(string(docs[1].text), "---\n# comment\napiVersion") {
		t.Errorf("second document starts on line %d with %.20q, want line 9, its ---", docs[1].first, docs[1].text)
	}
	idx := docs[1].idx
	for path, want := range map[string]int{
		"apiVersion": 11,
		"metadata.annotations.example.com/quoted":              16,
		"spec.containers[0]":                                   19,
		"spec.containers[0].name":                              19,
		"spec.containers[0].args":                              20,
		"spec.containers[0].args[1]":                           21, // inside a flow sequence
		"spec.containers[0].env[0].value":                      24,
		"spec.containers[0].env[1]":                            27,
		"spec.containers[0].env[1].value":                      27,
		"spec.containers[0].command[2]":                        31,
		"spec.containers[1].name":                              33,
		"spec.containers[1].ports[0][1]":                       36,
		"spec.containers[1].lifecycle.preStop.exec":            39,
		"spec.containers[1].lifecycle.preStop.exec.command[1]": 40,
		"spec.containers[1].lifecycle.preStop.exec.x":          39, // not written: its parent
		"spec.containers[1].readinessProbe.exec":               41, // through an alias: the alias
		"spec.volumes":                                         42,
		"data":                                                 43,
		"data.php.ini":                                         44,
		"nothing.here":                                         11, // the document's first line
	} {
		if got := idx.line(path); got != want {
			t.Errorf("line(%q) = %d, want %d", path, got, want)
		}
	}
	if got := idx.bodyLine("data.php.ini", 3); got != 47 {
		t.Errorf("bodyLine(data.php.ini, 3) = %d, want 47", got)
	}
	if got := idx.bodyLine("spec.containers[0].env[0].value", 2); got != 26 {
		t.Errorf("bodyLine(env value, 2) = %d, want 26", got)
	}
	if got := idx.bodyLine("spec.containers[0].command[2]", 1); got != 32 {
		t.Errorf("bodyLine(folded command, 1) = %d, want 32", got)
	}
	if got := idx.bodyLine("spec.containers[0].name", 2); got != 19 {
		t.Errorf("bodyLine of a plain scalar = %d, want its key's line 19", got)
	}
	if _, ok := idx.at["spec.containers[0].env[0].value.line two"]; ok {
		t.Error("a block scalar's content was read as a key")
	}
}

// TestYAMLBlockScalarLines checks that line n of a block scalar's value is
// found on the manifest line bodyLine gives, whatever its indicator: yaml.v3
// gives a block scalar's node the line of its indicator, and the content
// starts on the next line.
func TestYAMLBlockScalarLines(t *testing.T) {
	src := `apiVersion: v1
kind: ConfigMap
data:
  literal: |
    [www]
    listen = 9000
  strip: |-

    ; after a blank line
    pm.max_children = 5
  keep: |+
    pm = static

  indented: |2
      two more
    than the rest
  anchored: &a |
    line one
    line two
  own-line:
    |
    line one
    line two
  commented: | # a comment
    line one
    line two
list:
- |
  item line one
  item line two
`
	docs := readYAMLDocs([]byte(src))
	if len(docs) != 1 || docs[0].err != "" {
		t.Fatalf("docs %+v, want one without error", docs)
	}
	var values map[string]any
	if err := yamlv3.Unmarshal([]byte(src), &values); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(src, "\n")
	check := func(path, value string) {
		t.Helper()
		if _, ok := docs[0].idx.body[path]; !ok {
			t.Errorf("%s: not indexed as a block scalar", path)
			return
		}
		for n, want := range strings.Split(value, "\n") {
			if strings.TrimSpace(want) == "" {
				continue
			}
			at := docs[0].idx.bodyLine(path, n+1)
			if at < 1 || at > len(lines) || strings.TrimSpace(lines[at-1]) != strings.TrimSpace(want) {
				t.Errorf("%s line %d %q: bodyLine %d, which is not it", path, n+1, want, at)
			}
		}
	}
	for key, v := range values["data"].(map[string]any) {
		check("data."+key, v.(string))
	}
	check("list[0]", values["list"].([]any)[0].(string))
}

// TestReadYAMLDocs checks the documents of a file and their first lines,
// and that reading goes on after a document yaml.v3 cannot read.
func TestReadYAMLDocs(t *testing.T) {
	docs := readYAMLDocs([]byte("# header\n---\na: 1\n---\n# only a comment\n---\nb: 2\n...\n"))
	var firsts []int
	for _, d := range docs {
		firsts = append(firsts, d.first)
	}
	if !slices.Equal(firsts, []int{2, 4, 6}) {
		t.Fatalf("documents start on lines %v, want 2, 4 and 6 (their ---)", firsts)
	}
	if docs[0].idx.line("a") != 3 || docs[2].idx.line("b") != 7 {
		t.Errorf("a on line %d, b on line %d, want 3 and 7", docs[0].idx.line("a"), docs[2].idx.line("b"))
	}
	if j, err := yaml.YAMLToJSONStrict(docs[1].text); err != nil || string(j) != "null" {
		t.Errorf("the document of a comment only reads as %s, %v; want null", j, err)
	}
	if j, err := yaml.YAMLToJSONStrict(docs[0].text); err != nil || string(j) != `{"a":1}` {
		t.Errorf("the first document's text reads as %s, %v; want only its own {\"a\":1}", j, err)
	}

	if docs := readYAMLDocs([]byte("a: 1\n")); len(docs) != 1 || docs[0].first != 1 {
		t.Errorf("a file of one document: %+v, want one starting on line 1", docs)
	}
	if docs := readYAMLDocs(nil); len(docs) != 0 {
		t.Errorf("an empty file: %+v, want no document", docs)
	}

	// A key indented under a scalar (line 4), a quote opened on line 6
	// and not closed before the next ---, and one more wrong indentation
	// (line 9), read by a third decoder, which starts on line 7.
	src := "a: 1\n---\nb: 2\n  c: 3\n---\nd: \"x\n---\ne: 4\n  f: 5\n---\ng: 6\n"
	docs = readYAMLDocs([]byte(src))
	type doc struct {
		first int
		err   string
	}
	var got []doc
	for _, d := range docs {
		got = append(got, doc{d.first, d.err})
	}
	want := []doc{
		{1, ""},
		{4, "yaml: line 4: mapping values are not allowed in this context"},
		{6, "yaml: line 6: found unexpected document indicator"},
		{9, "yaml: line 9: mapping values are not allowed in this context"},
		{10, ""},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("documents %+v, want %+v", got, want)
	}
	if l := docs[4].idx.line("g"); l != 11 {
		t.Errorf("g after the errors on line %d, want 11", l)
	}
}

// TestK8sInvalidYAML checks that a document that is not YAML is reported
// at its line, and that the documents after it are still checked.
func TestK8sInvalidYAML(t *testing.T) {
	good, err := os.ReadFile(filepath.Join("testdata", "k8s", "good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "manifest.yaml")
	broken := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n   bad: indentation\n---\n"
	if err := os.WriteFile(file, append([]byte(broken), good...), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := (&Doctor{K8s: []string{file}}).Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var invalid, pod *Finding
	for i, f := range r.Findings {
		switch f.ID {
		case "k8s_manifest":
			invalid = &r.Findings[i]
		case "k8s_pod":
			pod = &r.Findings[i]
		}
	}
	if invalid == nil || invalid.Title != file+":5 is not valid YAML for Kubernetes" || !strings.Contains(invalid.Detail, "line 5") {
		t.Errorf("finding %+v, want k8s_manifest at line 5", invalid)
	}
	if pod == nil || pod.K8s[0].Line != 66+6 {
		t.Errorf("k8s_pod %+v, want the pod of good.yaml at line %d", pod, 66+6)
	}
}

// TestK8sConfigMapLines checks that a php-fpm setting in a ConfigMap is
// found at its manifest line when its document is not the file's first and
// its block scalar has an indicator other than |.
func TestK8sConfigMapLines(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "k8s", "broken-memory.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// Seven lines before, and a blank first line in the value: the file's
	// line 13, pm.max_children, line 6 of zzz-app.conf, moves to line 21,
	// line 7 of zzz-app.conf.
	src := "# a Service first\napiVersion: v1\nkind: Service\nmetadata:\n  name: app\nspec: {}\n---\n" +
		strings.Replace(string(b), "  zzz-app.conf: |\n", "  zzz-app.conf: |+\n\n", 1)
	file := filepath.Join(t.TempDir(), "manifest.yaml")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := strings.Split(src, "\n")[21-1]; strings.TrimSpace(got) != "pm.max_children = 20" {
		t.Fatalf("line 21 is %q", got)
	}
	r, err := (&Doctor{K8s: []string{file}}).Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range r.Findings {
		if f.ID != "k8s_memory_limit" {
			continue
		}
		for _, l := range f.K8s {
			if strings.HasPrefix(l.Text, "pm.max_children") {
				if l.Line != 21 || !strings.Contains(l.Text, "zzz-app.conf line 7") {
					t.Errorf("pm.max_children at %d, %q; want line 21, zzz-app.conf line 7", l.Line, l.Text)
				}
				return
			}
		}
		t.Fatalf("k8s_memory_limit names no pm.max_children: %v", k8sLines(f))
	}
	t.Fatal("no k8s_memory_limit finding")
}

// TestSuggestFieldNames checks the did-you-mean of an unknown field.
func TestSuggestFieldNames(t *testing.T) {
	container := reflect.TypeOf(corev1.Container{})
	for name, want := range map[string]string{
		"lifecyle":        "lifecycle",
		"LIFECYCLE":       "lifecycle",
		"imagePullPolice": "imagePullPolicy",
		"imag":            "image",
		"volumeMount":     "volumeMounts",
		"nothingLikeIt":   "",
	} {
		if got := suggestField(container, name); got != want {
			t.Errorf("suggestField(Container, %q) = %q, want %q", name, got, want)
		}
	}
	if got := suggestField(reflect.TypeOf(corev1.PodSpec{}), "terminationGracePeriod"); got != "" {
		t.Errorf("suggestField(PodSpec, terminationGracePeriod) = %q, want none", got)
	}
	if got := suggestField(reflect.TypeOf(""), "x"); got != "" {
		t.Errorf("suggestField(string, x) = %q, want none", got)
	}
}

func TestSuggestField(t *testing.T) {
	r := checkManifest(t, "broken-manifest.yaml")
	for _, f := range r.Findings {
		if f.ID == "k8s_unknown_field" && strings.Contains(f.Title, "terminationGracePeriod") && strings.Contains(f.Fix, "rename") {
			t.Errorf("terminationGracePeriod is too far from any field to be renamed: %s", f.Fix)
		}
	}
}
