package doctor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Reading manifest files: YAML documents, their lines, and strict
// decoding into the API types.

// readFile decodes every document of one manifest file.
func (k *k8sCheck) readFile(file string, src []byte) {
	for _, d := range readYAMLDocs(src) {
		if d.err != "" {
			k.invalidYAML(file, d.first, d.err)
			continue
		}
		doc := &k8sDoc{file: file, idx: d.idx}
		// YAMLToJSONStrict reads the first document of the text it is
		// given, with yaml.v2 as kubectl does, and rejects a key written
		// twice, which yaml.v3's Node keeps.
		j, err := yaml.YAMLToJSONStrict(d.text)
		if err != nil {
			msg, line := fileLines(err.Error(), d.first)
			k.invalidYAML(file, line, msg)
			continue
		}
		if string(j) == "null" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(j, &tm); err != nil {
			continue
		}
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 Pod":
			o := &corev1.Pod{}
			if k.decode(doc, j, o, "pod") {
				k.workloads = append(k.workloads, &k8sWorkload{doc: doc, kind: tm.Kind, meta: &o.ObjectMeta, spec: &o.Spec, at: "spec"})
			}
		case "apps/v1 Deployment":
			o := &appsv1.Deployment{}
			if k.decode(doc, j, o, "deployment") {
				k.workloads = append(k.workloads, &k8sWorkload{doc: doc, kind: tm.Kind, meta: &o.ObjectMeta, spec: &o.Spec.Template.Spec, at: "spec.template.spec"})
			}
		case "apps/v1 StatefulSet":
			o := &appsv1.StatefulSet{}
			if k.decode(doc, j, o, "statefulset") {
				k.workloads = append(k.workloads, &k8sWorkload{doc: doc, kind: tm.Kind, meta: &o.ObjectMeta, spec: &o.Spec.Template.Spec, at: "spec.template.spec"})
			}
		case "apps/v1 DaemonSet":
			o := &appsv1.DaemonSet{}
			if k.decode(doc, j, o, "daemonset") {
				k.workloads = append(k.workloads, &k8sWorkload{doc: doc, kind: tm.Kind, meta: &o.ObjectMeta, spec: &o.Spec.Template.Spec, at: "spec.template.spec"})
			}
		case "v1 ConfigMap":
			o := &corev1.ConfigMap{}
			if k.decode(doc, j, o, "configmap") {
				k.configMaps = append(k.configMaps, &k8sConfigMap{doc: doc, cm: o})
			}
		default:
			want := map[string]string{"Pod": "v1", "ConfigMap": "v1", "Deployment": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1"}[tm.Kind]
			switch {
			case want != "":
				k.c.add(Finding{ID: "k8s_manifest", Severity: SeverityError,
					Title:  fmt.Sprintf("%s has apiVersion %s; Kubernetes serves %s as %s", tm.Kind, tm.APIVersion, tm.Kind, want),
					K8s:    []*Location{doc.loc("apiVersion", "apiVersion: "+tm.APIVersion)},
					Impact: fmt.Sprintf("kubectl apply fails: no matches for kind %q in version %q.", tm.Kind, tm.APIVersion),
					Fix:    fmt.Sprintf("At %s write\n    apiVersion: %s", doc.where("apiVersion"), want)})
			case strings.HasSuffix(tm.Kind, "List"):
				k.c.notChecked("kubernetes: %s is a %s; give its items as separate documents (kubectl get -o yaml prints one) to check them", doc.where("kind"), tm.Kind)
			}
			// Anything else, a Service, an Ingress: nothing fcgiscope's
			// pod depends on.
		}
	}
}

// invalidYAML reports a document that is not valid YAML, or that
// Kubernetes would not read.
func (k *k8sCheck) invalidYAML(file string, line int, msg string) {
	k.c.add(Finding{ID: "k8s_manifest", Severity: SeverityError,
		Title:  fmt.Sprintf("%s:%d is not valid YAML for Kubernetes", file, line),
		Detail: strings.Join(strings.Fields(msg), " ") + ".",
		K8s:    []*Location{{File: file, Line: line}},
		Impact: "kubectl apply refuses the whole file: nothing in it is applied.",
		Fix:    fmt.Sprintf("Correct the YAML at %s:%d (a key written twice, or an indentation that puts a key where none may be).", file, line)})
}

var jsonTypeField = regexp.MustCompile(`Go struct field \S*?\.(\S+) of type`)

// decode decodes one document strictly into obj. Unknown and duplicate
// fields are findings, and obj is still used; a value of the wrong type
// makes the document unusable.
func (k *k8sCheck) decode(doc *k8sDoc, j []byte, obj any, resource string) bool {
	strict, err := sjson.UnmarshalStrict(j, obj)
	if err != nil {
		path := ""
		if m := jsonTypeField.FindStringSubmatch(err.Error()); m != nil {
			path = m[1]
		}
		k.c.add(Finding{ID: "k8s_manifest", Severity: SeverityError,
			Title:  fmt.Sprintf("%s: a value of the wrong type", doc.where(path)),
			Detail: strings.TrimPrefix(err.Error(), "json: ") + ".",
			K8s:    []*Location{doc.loc(path, path)},
			Impact: "kubectl apply refuses the object, and the doctor cannot check it either.",
			Fix:    fmt.Sprintf("Write the value at %s with the type Kubernetes wants (`kubectl explain %s` describes every field); quote a string that YAML reads as a number or a boolean.", doc.where(path), kubectlExplain(resource, path))})
		return false
	}
	for _, e := range strict {
		path := ""
		var fe sjson.FieldError
		if errors.As(e, &fe) {
			path = fe.FieldPath()
		}
		parent, name := splitPath(path)
		f := Finding{ID: "k8s_unknown_field", Severity: SeverityError,
			K8s:    []*Location{doc.loc(path, path)},
			Impact: "kubectl apply refuses the manifest (field validation is Strict by default); applied with --validate=false, the API server drops the field and what it was meant to set does not happen.",
		}
		if strings.HasPrefix(e.Error(), "duplicate field") {
			f.Title = fmt.Sprintf("%s is written twice", path)
			f.Detail = "A key appears twice in the same object; only one of the values would count."
			f.Fix = fmt.Sprintf("Keep one %s at %s and delete the other.", name, doc.where(path))
			k.c.add(f)
			continue
		}
		t := typeAt(reflect.TypeOf(obj), pathTokens(parent))
		f.Title = fmt.Sprintf("Unknown field %q in %s", name, orDefault(parent, "the object"))
		f.Detail = fmt.Sprintf("Kubernetes' %s has no field %s.", typeName(t), name)
		f.Fix = fmt.Sprintf("Remove %s at %s, or move it where it belongs; `kubectl explain %s` lists the fields.", name, doc.where(path), kubectlExplain(resource, parent))
		if s := suggestField(t, name); s != "" {
			f.Fix = fmt.Sprintf("At %s rename %s to %s.", doc.where(path), name, s)
		}
		k.c.add(f)
	}
	return true
}

// ---- the lines of a YAML document ----

// yamlDoc is one document of a manifest file.
type yamlDoc struct {
	// first is the line the document starts on: its --- marker, or its
	// first line of content.
	first int
	// text is the file from line first on: the document, and those after
	// it.
	text []byte
	idx  *yamlIndex
	// err is set, with the lines of the file, when yaml.v3 cannot read the
	// document; first is then the line it names.
	err string
}

// yamlErrLine finds the line numbers yaml.v2's and yaml.v3's errors give.
var yamlErrLine = regexp.MustCompile(`line (\d+)`)

// readYAMLDocs reads the documents of a file with yaml.v3's decoder, one
// Decode per document, and indexes the lines of each. A document yaml.v3
// cannot read is returned with its error, and reading goes on at the next
// document marker (---) after the line the error names, with a decoder
// of its own, so that one broken document does not hide the others.
func readYAMLDocs(src []byte) []yamlDoc {
	starts := []int{0} // the offset of each line
	for i, b := range src {
		if b == '\n' && i+1 < len(src) {
			starts = append(starts, i+1)
		}
	}
	var docs []yamlDoc
	// base is the line the decoder starts at: its line 1.
	for base := 1; ; {
		dec := yamlv3.NewDecoder(bytes.NewReader(src[starts[base-1]:]))
		for {
			var n yamlv3.Node
			err := dec.Decode(&n)
			if errors.Is(err, io.EOF) {
				return docs
			}
			if err != nil {
				msg, line := fileLines(err.Error(), base)
				docs = append(docs, yamlDoc{first: line, err: msg})
				base = nextDocMarker(src, starts, max(line, base+1))
				if base == 0 {
					return docs
				}
				break
			}
			first := max(n.Line, 1) + base - 1
			docs = append(docs, yamlDoc{first: first, text: src[starts[first-1]:], idx: indexYAML(&n, base-1)})
		}
	}
}

// nextDocMarker returns the first line from line from on that is a
// document marker (---), or 0 when none is.
func nextDocMarker(src []byte, starts []int, from int) int {
	for l := from; l <= len(starts); l++ {
		rest := src[starts[l-1]:]
		if m, ok := bytes.CutPrefix(rest, []byte("---")); ok && (len(m) == 0 || strings.ContainsRune(" \t\r\n", rune(m[0]))) {
			return l
		}
	}
	return 0
}

// fileLines turns the "line N" of a YAML error about the text that starts
// on line first of the file into lines of the file. line is the first
// line the error names, or first when it names none.
func fileLines(msg string, first int) (out string, line int) {
	line = first
	if m := yamlErrLine.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		line = first + n - 1
	}
	out = yamlErrLine.ReplaceAllStringFunc(msg, func(s string) string {
		n, _ := strconv.Atoi(strings.TrimPrefix(s, "line "))
		return fmt.Sprintf("line %d", first+n-1)
	})
	return out, line
}

// yamlIndex maps the paths of a document's keys and sequence items to
// their lines, in the form sigs.k8s.io/json gives field paths:
// "spec.containers[1].env[0].value".
type yamlIndex struct {
	at map[string]int
	// body holds, for a value that is a block scalar (key: |), the line
	// of its indicator (|, |-, |+, >, ...): its content starts on the
	// next line.
	body map[string]int
	// first is the document's first line of content, for paths not found
	// at all.
	first int
	// offset is added to yaml.v3's lines, which count from the line the
	// decoder started at.
	offset int
}

// indexYAML indexes the lines of a document yaml.v3 has read, adding
// offset to each. A mapping key is at its own line, a sequence item at the
// line it starts on. An alias (*name) is not followed: the paths through it
// have its line.
func indexYAML(doc *yamlv3.Node, offset int) *yamlIndex {
	x := &yamlIndex{at: map[string]int{}, body: map[string]int{}, first: doc.Line + offset, offset: offset}
	if len(doc.Content) > 0 {
		x.first = doc.Content[0].Line + offset
	}
	x.add("", doc)
	return x
}

// add indexes node n, which is at path, and the nodes under it.
func (x *yamlIndex) add(path string, n *yamlv3.Node) {
	switch n.Kind {
	case yamlv3.DocumentNode:
		for _, c := range n.Content {
			x.add(path, c)
		}
	case yamlv3.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, value := n.Content[i], n.Content[i+1]
			kp := key.Value
			if path != "" {
				kp = path + "." + kp
			}
			// Of a key written twice the last counts, as for the
			// decoders.
			x.at[kp] = key.Line + x.offset
			x.add(kp, value)
		}
	case yamlv3.SequenceNode:
		for i, item := range n.Content {
			ip := fmt.Sprintf("%s[%d]", path, i)
			x.at[ip] = item.Line + x.offset
			x.add(ip, item)
		}
	case yamlv3.ScalarNode:
		if n.Style&(yamlv3.LiteralStyle|yamlv3.FoldedStyle) != 0 {
			x.body[path] = n.Line + x.offset
		}
	}
}

// line returns the line of path, or of its nearest ancestor written in the
// document.
func (x *yamlIndex) line(p string) int {
	for p != "" {
		if n, ok := x.at[p]; ok {
			return n
		}
		i := max(strings.LastIndexByte(p, '.'), strings.LastIndexByte(p, '['))
		if i <= 0 {
			break
		}
		p = p[:i]
	}
	return x.first
}

// bodyLine returns the manifest line of line n (from 1) of the block
// scalar at p, or the line of p's key when its value is not a block. The
// lines of a literal block (|) are those of its value; a folded one (>)
// joins lines, so that past the first join a line of its value is further
// down the manifest than this says.
func (x *yamlIndex) bodyLine(p string, n int) int {
	if b, ok := x.body[p]; ok && n > 0 {
		return b + n
	}
	return x.line(p)
}
