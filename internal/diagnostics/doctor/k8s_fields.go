package doctor

import (
	"reflect"
	"strings"

	"github.com/fcgiscope/fcgiscope/internal/cliflag"
)

// The fields of the API types, for the findings about a field that is
// unknown or of the wrong type.

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// kubectlExplain turns a field path into kubectl explain's form:
// deployment.spec.template.spec.containers.
func kubectlExplain(resource, path string) string {
	var parts []string
	for _, t := range pathTokens(path) {
		if !strings.HasPrefix(t, "[") {
			parts = append(parts, t)
		}
	}
	return strings.Join(append([]string{resource}, parts...), ".")
}

// splitPath splits off the last key of a field path.
func splitPath(p string) (parent, name string) {
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return "", p
}

// pathTokens splits "spec.containers[1].lifecycle" into spec, containers,
// [1], lifecycle.
func pathTokens(p string) []string {
	var out []string
	for _, part := range strings.Split(p, ".") {
		for part != "" {
			i := strings.IndexByte(part, '[')
			switch {
			case i < 0:
				out = append(out, part)
				part = ""
			case i > 0:
				out = append(out, part[:i])
				part = part[i:]
			default:
				j := strings.IndexByte(part, ']')
				if j < 0 {
					out = append(out, part)
					part = ""
					continue
				}
				out = append(out, part[:j+1])
				part = part[j+1:]
			}
		}
	}
	return out
}

// typeAt follows a field path through the API types by their JSON names.
func typeAt(t reflect.Type, tokens []string) reflect.Type {
	for _, tok := range tokens {
		for t != nil && t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t == nil {
			return nil
		}
		switch {
		case strings.HasPrefix(tok, "["):
			if t.Kind() != reflect.Slice && t.Kind() != reflect.Array {
				return nil
			}
			t = t.Elem()
		case t.Kind() == reflect.Map:
			t = t.Elem()
		case t.Kind() == reflect.Struct:
			var next reflect.Type
			for _, f := range jsonFields(t) {
				if f.name == tok {
					next = f.typ
				}
			}
			t = next
		default:
			return nil
		}
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

type jsonField struct {
	name string
	typ  reflect.Type
}

// jsonFields lists a struct's fields by their JSON names, with those of
// inlined structs.
func jsonFields(t reflect.Type) []jsonField {
	var out []jsonField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if (f.Anonymous && name == "") || strings.Contains(opts, "inline") {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				out = append(out, jsonFields(ft)...)
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, jsonField{name, f.Type})
	}
	return out
}

func typeName(t reflect.Type) string {
	if t == nil || t.Name() == "" {
		return "object here"
	}
	return t.Name()
}

// suggestField returns the field of t that name may have been meant as,
// ignoring case: the one that differs only in case, else the nearest by
// cliflag.Suggest, or "" when none is near enough. A field whose name only
// begins with name, or the other way round, is suggested when it is at
// most two letters longer or shorter: cliflag.Suggest counts any such
// prefix as near, for flags written short, but a field is written whole,
// and terminationGracePeriod is no slip for terminationGracePeriodSeconds.
func suggestField(t reflect.Type, name string) string {
	if t == nil || t.Kind() != reflect.Struct {
		return ""
	}
	typed := strings.ToLower(name)
	byLower := map[string]string{}
	var names []string
	for _, f := range jsonFields(t) {
		if strings.EqualFold(f.name, name) {
			return f.name
		}
		lower := strings.ToLower(f.name)
		if _, dup := byLower[lower]; dup {
			continue
		}
		prefix := strings.HasPrefix(lower, typed) || strings.HasPrefix(typed, lower)
		if prefix && max(len(lower), len(typed))-min(len(lower), len(typed)) > 2 {
			continue
		}
		byLower[lower] = f.name
		names = append(names, lower)
	}
	if s := cliflag.Suggest(typed, names); len(s) > 0 {
		return byLower[s[0]]
	}
	return ""
}
