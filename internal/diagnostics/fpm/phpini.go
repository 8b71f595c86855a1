package fpm

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// PHPIni is the php.ini php-fpm loads and the files of its scan directory
// (conf.d), read in PHP's order: php.ini first, then the scan directory's
// *.ini files in alphabetical order, a later value replacing an earlier one.
type PHPIni struct {
	// Files lists the files read.
	Files []string
	// Settings holds each setting's value in effect, by name as written
	// ("post_max_size", "session.save_path").
	Settings map[string]Setting
}

// LoadPHPIni reads the php.ini at path and the *.ini files in scanDir.
// Either may be "": the official Docker images ship no php.ini, only a scan
// directory. Only a path that cannot be read is an error; a line PHP would
// reject is skipped, as fcgiscope reads php.ini for explanations, not to
// check it.
func LoadPHPIni(path, scanDir string) (*PHPIni, error) {
	ini := &PHPIni{Settings: map[string]Setting{}}
	if path != "" {
		src, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading php.ini: %w", err)
		}
		ini.read(path, src)
	}
	if scanDir == "" {
		return ini, nil
	}
	names, _ := filepath.Glob(filepath.Join(scanDir, "*.ini"))
	sort.Strings(names)
	for _, name := range names {
		if src, err := os.ReadFile(name); err == nil {
			ini.read(name, src)
		}
	}
	return ini, nil
}

// read takes the settings of one file. Sections ([PHP], [Session]) do not
// scope php.ini settings, except [PATH=] and [HOST=] ones, which apply to
// some requests only and are left out.
func (ini *PHPIni) read(path string, src []byte) {
	ini.Files = append(ini.Files, path)
	scoped := false
	for i, line := range bytes.Split(src, []byte("\n")) {
		st := scanLine(strings.TrimRight(string(line), "\r"), os.LookupEnv)
		switch {
		case st.err != "" || st.hashComment:
		case st.kind == stmtSection:
			lower := strings.ToLower(st.name)
			scoped = strings.HasPrefix(lower, "path=") || strings.HasPrefix(lower, "host=")
		case st.kind == stmtEntry && !scoped && !st.noValue:
			ini.Settings[st.name] = Setting{Key: st.name, Value: st.value, Raw: st.raw, File: path, Line: i + 1}
		}
	}
}

// phpDefaults are PHP 8.2's built-in values of the settings fcgiscope
// explains with, for when neither php.ini nor the pool sets them.
var phpDefaults = map[string]string{
	"post_max_size":       "8M",
	"upload_max_filesize": "2M",
	"max_input_vars":      "1000",
	"memory_limit":        "128M",
	"file_uploads":        "1",
	"log_errors":          "1",
	"error_log":           "",
	"session.save_path":   "",
	"upload_tmp_dir":      "",
	"open_basedir":        "",
}

// PHPSetting returns the value PHP uses for the ini setting name in pool:
// the pool's php_admin_value or php_value, else php.ini's (ini may be nil),
// else PHP's default, whose Setting has no File. pool may be nil.
func PHPSetting(pool *Pool, ini *PHPIni, name string) Setting {
	if pool != nil {
		if v, ok := pool.PHPValues[name]; ok {
			return v.Setting
		}
	}
	if ini != nil {
		if s, ok := ini.Settings[name]; ok {
			return s
		}
	}
	return Setting{Key: name, Value: phpDefaults[name]}
}

// Describe says a setting as a person reads it: "post_max_size = 2M
// (/etc/php/8.2/fpm/php.ini:703)", with "PHP's default" for one no file
// sets.
func (s Setting) Describe(name string) string {
	where := s.Where()
	if where == "" {
		where = "PHP's default"
	}
	v := s.Value
	if v == "" {
		v = `""`
	}
	if s.Key != "" && s.Key != name {
		return fmt.Sprintf("%s = %s (%s in %s)", name, v, s.Key, where)
	}
	return fmt.Sprintf("%s = %s (%s)", name, v, where)
}

// ParseSize reads a size as PHP's ini settings take it: a number with an
// optional K, M or G suffix in either case ("2M", "512k", "1073741824").
// It reports false for anything else; "0" is 0, which for post_max_size
// and upload_max_filesize means no limit.
func ParseSize(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	mult := int64(1)
	switch s[len(s)-1] {
	case 'k', 'K':
		mult = 1 << 10
	case 'm', 'M':
		mult = 1 << 20
	case 'g', 'G':
		mult = 1 << 30
	}
	if mult != 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n * mult, true
}

// FindPHPIni guesses which php.ini the php-fpm of conf loads, from where
// its php-fpm.conf is: Debian keeps both in /etc/php/<version>/fpm/, the
// official Docker images keep php-fpm.conf in /usr/local/etc/ and php.ini
// in /usr/local/etc/php/. It returns the php.ini path and the scan
// directory, or "" when neither layout matches; php-fpm's -c option and
// PHPRC are not seen from here.
func FindPHPIni(conf *Config) (path, scanDir string) {
	if conf == nil || conf.Path == "" {
		return "", ""
	}
	dir := filepath.Dir(conf.Path)
	for _, d := range []string{dir, filepath.Join(dir, "php")} {
		ini := filepath.Join(d, "php.ini")
		scan := filepath.Join(d, "conf.d")
		if _, err := os.Stat(scan); err != nil {
			scan = ""
		}
		if _, err := os.Stat(ini); err == nil {
			return ini, scan
		}
		if scan != "" && d != dir {
			// The Docker images ship no php.ini, only conf.d.
			return "", scan
		}
	}
	return "", ""
}
