package nginxconf

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Load reads the configuration at path: nginx's main file, or the output of
// `nginx -T` saved to a file (how a sidecar in another container gets it,
// from a ConfigMap), which it recognises by the "# configuration file"
// lines nginx writes before each file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if bytes.Contains(b, []byte("\n"+dumpMarker)) || bytes.HasPrefix(b, []byte(dumpMarker)) {
		main, files, err := SplitDump(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		fsys := DumpFS(files)
		return Read("nginx -T output in "+path, main, fsys.Open, fsys.Glob)
	}
	var fsys RootFS
	return Read(path, path, fsys.Open, fsys.Glob)
}

// DefaultPaths are where nginx's main file usually is: Debian's and most
// distributions', then the places of a build from source.
var DefaultPaths = []string{"/etc/nginx/nginx.conf", "/usr/local/nginx/conf/nginx.conf", "/usr/local/etc/nginx/nginx.conf"}

// dumpMarker starts each file in the output of nginx -T.
const dumpMarker = "# configuration file "

// SplitDump splits the output of `nginx -T` into its files. nginx writes
// each file as it is, after a "# configuration file NAME:" line and
// followed by one newline of its own, so line numbers stay those of the
// files. The first file is the main one.
func SplitDump(out []byte) (main string, files map[string][]byte, err error) {
	files = make(map[string][]byte)
	var name string
	var buf bytes.Buffer
	flush := func() {
		if name == "" {
			return
		}
		b := bytes.Clone(buf.Bytes())
		// Drop the newline nginx adds after each file.
		b = bytes.TrimSuffix(b, []byte("\n"))
		files[name] = b
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, dumpMarker) && strings.HasSuffix(line, ":") {
			flush()
			name = strings.TrimSuffix(strings.TrimPrefix(line, dumpMarker), ":")
			buf.Reset()
			if main == "" {
				main = name
			}
			continue
		}
		if name != "" {
			buf.WriteString(line)
			buf.WriteByte('\n')
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return "", nil, err
	}
	if main == "" {
		return "", nil, errors.New("no \"# configuration file\" line in the output of nginx -T")
	}
	return main, files, nil
}

// DumpFS serves the files of an nginx -T dump to crossplane.
type DumpFS map[string][]byte

func (m DumpFS) Open(name string) (io.ReadCloser, error) {
	b, ok := m[filepath.Clean(name)]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (m DumpFS) Glob(pattern string) ([]string, error) {
	var out []string
	for name := range m {
		if ok, err := filepath.Match(pattern, name); err != nil {
			return nil, err
		} else if ok {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// RootFS reads files under root as if root were "/".
type RootFS string

func (r RootFS) Path(name string) string {
	if r == "" {
		return name
	}
	return filepath.Join(string(r), name)
}

func (r RootFS) Open(name string) (io.ReadCloser, error) {
	f, err := os.Open(r.Path(name))
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (r RootFS) Glob(pattern string) ([]string, error) {
	m, err := filepath.Glob(r.Path(pattern))
	if err != nil || r == "" {
		return m, err
	}
	for i := range m {
		m[i] = "/" + strings.TrimPrefix(strings.TrimPrefix(m[i], string(r)), "/")
	}
	return m, nil
}
