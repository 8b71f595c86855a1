package doctor

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// The environment and flags of the pod's containers.

// k8sValue is a setting of a container: an environment variable or a
// flag.
type k8sValue struct {
	value string
	set   bool
	// known is false for a value taken from a Secret or a field
	// reference, which the manifest does not show.
	known bool
	loc   *Location
}

// env returns an environment variable of a container: from env, else
// from envFrom's ConfigMaps.
func (p *k8sPod) env(kc *k8sContainer, name string) k8sValue {
	var v k8sValue
	for i, ef := range kc.c.EnvFrom {
		key, ok := strings.CutPrefix(name, ef.Prefix)
		if !ok {
			continue
		}
		var cm *k8sConfigMap
		if ef.ConfigMapRef != nil {
			cm = p.configMap(ef.ConfigMapRef.Name)
		}
		if cm == nil {
			// A Secret, or a ConfigMap not given: it may set the
			// variable, to a value the manifest does not show.
			src := "a ConfigMap not given"
			if ef.SecretRef != nil {
				src = "Secret " + ef.SecretRef.Name
			}
			v = k8sValue{set: true, loc: p.doc.loc(fmt.Sprintf("%s.envFrom[%d]", kc.at, i), fmt.Sprintf("%s may come from %s  (envFrom of %s)", name, src, kc.what()))}
			continue
		}
		if val, ok := cm.cm.Data[key]; ok {
			v = k8sValue{value: val, set: true, known: true, loc: cm.doc.loc("data."+key, fmt.Sprintf("%s=%s  (ConfigMap %s, envFrom of %s)", name, val, cm.cm.Name, kc.what()))}
		}
	}
	for i, e := range kc.c.Env {
		if e.Name != name {
			continue
		}
		at := fmt.Sprintf("%s.env[%d]", kc.at, i)
		switch {
		case e.ValueFrom == nil:
			v = k8sValue{value: e.Value, set: true, known: true, loc: p.doc.loc(at+".value", fmt.Sprintf("%s=%s  (%s)", name, e.Value, kc.what()))}
		case e.ValueFrom.ConfigMapKeyRef != nil && p.configMap(e.ValueFrom.ConfigMapKeyRef.Name) != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm := p.configMap(ref.Name)
			val, ok := cm.cm.Data[ref.Key]
			v = k8sValue{value: val, set: ok, known: ok, loc: p.doc.loc(at, fmt.Sprintf("%s from ConfigMap %s key %s  (%s)", name, ref.Name, ref.Key, kc.what()))}
		default:
			v = k8sValue{set: true, loc: p.doc.loc(at, fmt.Sprintf("%s from %s  (%s)", name, valueSource(e.ValueFrom), kc.what()))}
		}
	}
	return v
}

func valueSource(s *corev1.EnvVarSource) string {
	switch {
	case s.SecretKeyRef != nil:
		return "Secret " + s.SecretKeyRef.Name
	case s.ConfigMapKeyRef != nil:
		return "ConfigMap " + s.ConfigMapKeyRef.Name
	case s.FieldRef != nil:
		return "the pod's " + s.FieldRef.FieldPath
	}
	return "a reference"
}

// envLookup gives php-fpm's ${NAME} its container's environment.
func (p *k8sPod) envLookup(kc *k8sContainer) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v := p.env(kc, name)
		return v.value, v.set && v.known
	}
}

// fcgiscopeSetting returns one of fcgiscope's settings: its flag in args
// (--listen, --admin-listen, ...), else its FCGISCOPE_ variable, else the
// default.
func (p *k8sPod) fcgiscopeSetting(envName, def string) k8sValue {
	kc := p.fcgiscope
	flagName := "--" + strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(envName, "FCGISCOPE_")), "_", "-")
	args := append(slices.Clone(kc.c.Command), kc.c.Args...)
	nCmd := len(kc.c.Command)
	for i := len(args) - 1; i >= 0; i-- {
		a := strings.Replace(args[i], "--", "-", 1)
		want := strings.Replace(flagName, "--", "-", 1)
		field := fmt.Sprintf("%s.args[%d]", kc.at, i-nCmd)
		if i < nCmd {
			field = fmt.Sprintf("%s.command[%d]", kc.at, i)
		}
		if v, ok := strings.CutPrefix(a, want+"="); ok {
			return k8sValue{value: v, set: true, known: true, loc: p.doc.loc(field, args[i]+"  ("+kc.what()+")")}
		}
		if a == want {
			v := "true"
			if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				v = args[i+1]
			}
			return k8sValue{value: v, set: true, known: true, loc: p.doc.loc(field, args[i]+" "+v+"  ("+kc.what()+")")}
		}
	}
	if v := p.env(kc, envName); v.set {
		return v
	}
	return k8sValue{value: def, known: true, loc: p.doc.loc(kc.at, fmt.Sprintf("%s not set: %s  (%s)", envName, orDefault(def, `""`), kc.what()))}
}
