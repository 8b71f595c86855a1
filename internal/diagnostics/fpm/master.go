package fpm

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// masterTitle is how php-fpm's master names itself in its command line:
// "php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)".
const masterTitle = "php-fpm: master process ("

// FindMaster returns the pid of the running php-fpm master of conf, as
// seen in this machine's /proc: the pid file's, when it names a php-fpm
// master, else the master whose command line names conf's file, else the
// only master there is. It returns 0 when none is visible (php-fpm in
// another container without a shared process namespace).
func FindMaster(conf *Config) int {
	if conf == nil {
		return 0
	}
	if s, ok := conf.Global["pid"]; ok && s.Value != "" {
		path := s.Value
		if !filepath.IsAbs(path) {
			path = filepath.Join(conf.Prefix, path)
		}
		if b, err := os.ReadFile(path); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && isMaster(pid) != "" {
				return pid
			}
		}
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	only, masters := 0, 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		title := isMaster(pid)
		if title == "" {
			continue
		}
		// The title has the path as given to php-fpm, relative or not.
		named := strings.TrimSuffix(strings.TrimPrefix(title, masterTitle), ")")
		if named == conf.Path || !filepath.IsAbs(named) && filepath.Base(named) == filepath.Base(conf.Path) {
			return pid
		}
		only, masters = pid, masters+1
	}
	if masters == 1 {
		return only
	}
	return 0
}

// isMaster returns the command line of pid when it is a php-fpm master.
func isMaster(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return ""
	}
	b = bytes.TrimRight(bytes.ReplaceAll(b, []byte{0}, []byte{' '}), " ")
	if !bytes.HasPrefix(b, []byte(masterTitle)) {
		return ""
	}
	return string(b)
}

// Master finds php-fpm's master once and again whenever the one found has
// gone (php-fpm restarted). Its zero value finds nothing; set Config.
type Master struct {
	Config *Config

	mu  sync.Mutex
	pid int
}

// Pid returns the master's pid, or 0 when none is visible.
func (m *Master) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pid == 0 || isMaster(m.pid) == "" {
		m.pid = FindMaster(m.Config)
	}
	return m.pid
}

// Root returns the directory through which the master's file system is
// seen here, "/proc/PID/root", or "" when it cannot be read.
func (m *Master) Root() string {
	pid := m.Pid()
	if pid == 0 {
		return ""
	}
	root := "/proc/" + strconv.Itoa(pid) + "/root"
	if _, err := os.Stat(root + "/"); err != nil {
		return ""
	}
	return root
}
