// Package fpm reads php-fpm's configuration the way php-fpm 8.2 does, so
// that a failure can be explained with the directive that caused it and the
// file and line it came from ("request_terminate_timeout = 5s at
// /etc/php/8.2/fpm/pool.d/www.conf:412").
//
// It reproduces php-fpm's own rules rather than generic INI rules, because
// they differ in ways that matter when explaining a failure:
//
//   - Every line is read on its own by PHP's INI scanner: values may be
//     quoted with "..." (with the escapes \" \\ \$) or '...' (raw), ${NAME}
//     is replaced from the environment, the bare words yes/on/true become
//     "1" and no/off/false/none/null become "", and the error-level
//     constants and the operators | & ^ ~ ! ( ) are evaluated, so that
//     "E_ALL & ~E_NOTICE" reads as 32759 as it does for php-fpm. Other PHP
//     constants are left as written.
//   - ';' starts a comment. '#' does not: PHP 7 removed '#' comments and
//     php-fpm rejects such a line. This package skips it with a warning.
//   - [global] (in any letter case) selects the global section, any other
//     name a pool; a pool name seen again, in any letter case, reopens that
//     pool. The section in effect carries over into and out of included
//     files, as in php-fpm.
//   - include = pattern is expanded with glob(3) semantics (sorted, hidden
//     files only for patterns that name them, directories skipped) and may
//     appear in any section. A relative pattern is relative to php-fpm's
//     prefix (see Options.Prefix). php-fpm gives up after 5 nested files;
//     this package reports an include cycle, or deeper nesting, as a
//     warning and carries on.
//   - For a scalar directive the last value wins, also across files. For
//     php_value, php_flag, php_admin_value, php_admin_flag and env, the
//     first definition of a name wins (php-fpm applies its list of them in
//     reverse), and an admin value beats a non-admin one.
//   - $pool is replaced by the pool name in every string directive of a
//     pool and in php_value/php_admin_value/env values; in the global
//     section php-fpm rejects it.
//
// Nothing is fatal except failing to read the main file. Everything php-fpm
// would reject, and a few things it accepts but that are surely mistakes,
// is collected in Config.Warnings as "file:line: message". Warnings for
// things php-fpm refuses to start with end in "(php-fpm refuses to start)".
// Checks that depend on the machine (users, groups, directories, sockets)
// are not made.
package fpm

import (
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// Setting is one directive as configured, and where.
type Setting struct {
	// Key is the directive name as written, such as "pm.max_children" or
	// "php_admin_value[memory_limit]".
	Key string
	// Value is the value php-fpm uses: unquoted, with ${NAME} and, where
	// php-fpm does it, $pool replaced. For php_flag and php_admin_flag it
	// is "1" or "0", which is what php-fpm hands to PHP.
	Value string
	// Raw is the value as written, without the comment.
	Raw string
	// File and Line locate the directive; File is empty for a default.
	File string
	Line int
}

// Where returns "file:line", or "" for a setting that was not configured.
func (s Setting) Where() string {
	if s.File == "" {
		return ""
	}
	return s.File + ":" + strconv.Itoa(s.Line)
}

// IsSet reports whether the setting comes from a file.
func (s Setting) IsSet() bool { return s.File != "" }

// PHPValue is a php.ini setting a pool sets with php_value, php_flag,
// php_admin_value or php_admin_flag.
type PHPValue struct {
	Setting
	// Admin is set for php_admin_value and php_admin_flag, which scripts
	// cannot change with ini_set.
	Admin bool
}

// Config is a php-fpm configuration: the main file and everything it
// includes.
type Config struct {
	// Path is the main file; Load makes it absolute.
	Path string
	// Prefix is the directory relative include patterns and relative unix
	// socket paths were resolved against.
	Prefix string
	// Files lists every file read, in the order they were first read.
	Files []string
	// Global holds the directives of the [global] section by lower-case
	// name; include holds the last include directive.
	Global map[string]Setting
	// ErrorLog is the global error_log as configured, or "" when it is not
	// set. php-fpm then logs to log/php-fpm.log under its local state
	// directory: /var/log/php-fpm.log for Debian's build, which however
	// ships error_log = /var/log/php8.2-fpm.log. "syslog" means syslog.
	// A relative path is relative to the prefix given with -p, or to the
	// local state directory.
	ErrorLog string
	// ProcessControlTimeout is the global process_control_timeout: how
	// long the master lets busy workers finish after a graceful stop or
	// reload (SIGQUIT, SIGUSR2) before it sends them SIGTERM. 0, the
	// default, sends SIGTERM at once: requests in flight are cut.
	ProcessControlTimeout time.Duration
	// Pools are the pools in the order their sections first appear.
	Pools []*Pool
	// Warnings are problems found, as "file:line: message".
	Warnings []string

	// fatal counts the warnings for which php-fpm refuses to start.
	fatal int
}

// Pool is one worker pool, a section other than [global].
type Pool struct {
	// Name is the section name as first written.
	Name string
	// File and Line locate the first section header of the pool.
	File string
	Line int
	// Settings holds every directive of the pool that is in effect, by
	// lower-case name; arrays are keyed as written, "php_value[memory_limit]".
	Settings map[string]Setting

	// Listen is the listen directive, with $pool replaced.
	Listen Setting
	// ListenAddr is where the pool listens: a unix socket (a relative path
	// resolved against the pool's prefix or Config.Prefix), or a TCP
	// address. A port alone, which php-fpm binds on all IPv6 and IPv4
	// addresses, is ":port". A host name is kept as written; php-fpm binds
	// the first address it resolves to. Zero when listen is missing or
	// invalid.
	ListenAddr           fcgi.Addr
	ListenOwner          string
	ListenGroup          string
	ListenMode           string
	ListenAllowedClients string
	// ListenBacklog is listen.backlog. php-fpm 8.2 on Linux defaults to -1,
	// which the kernel reads as net.core.somaxconn (4096 since Linux 5.4);
	// the documented 511 is the default elsewhere.
	ListenBacklog int

	User   string
	Group  string
	Prefix string
	Chroot string
	Chdir  string

	// PM is static, dynamic or ondemand, in lower case; "" when missing,
	// which php-fpm refuses.
	PM          string
	MaxChildren int
	// StartServers is pm.start_servers; for pm = dynamic without it, the
	// value php-fpm computes, min + (max - min) / 2 of the spare servers.
	// php-fpm sets it and the spare counts to 0 for ondemand.
	StartServers int
	MinSpare     int
	MaxSpare     int
	MaxRequests  int
	// ProcessIdleTimeout is pm.process_idle_timeout (default 10s).
	ProcessIdleTimeout time.Duration

	// RequestTerminateTimeout is request_terminate_timeout: php-fpm kills
	// a worker whose request runs longer (0 = off).
	RequestTerminateTimeout time.Duration
	// RequestTerminateTimeoutTrackFinished is
	// request_terminate_timeout_track_finished: whether the timeout keeps
	// running after fastcgi_finish_request().
	RequestTerminateTimeoutTrackFinished bool
	// RequestSlowlogTimeout is request_slowlog_timeout (0 = off).
	RequestSlowlogTimeout time.Duration
	// Slowlog is the slowlog path as configured, with $pool replaced; ""
	// when not set. A relative path is relative to the pool's prefix.
	Slowlog string
	// AccessLog is access.log as configured, with $pool replaced.
	AccessLog string
	// AccessFormat is access.format, or php-fpm's default
	// `%R - %u %t "%m %r" %s` when access.log is set without it.
	AccessFormat string

	CatchWorkersOutput    bool
	DecorateWorkersOutput bool // default true
	ClearEnv              bool // default true

	StatusPath string
	// StatusListen is pm.status_listen: a listener of its own for the
	// status page, answered by a hidden pool, so that the page comes even
	// when every worker of this pool is busy. Zero when unset.
	StatusListen fcgi.Addr
	PingPath     string
	// PingResponse is ping.response; "pong" when ping.path is set without
	// it, "" without ping.path, as php-fpm does.
	PingResponse string
	// SecurityLimitExtensions are the script extensions the pool runs
	// (default .php and .phar); empty means any.
	SecurityLimitExtensions []string

	// PHPValues are the pool's php.ini overrides by ini name, as php-fpm
	// applies them.
	PHPValues map[string]PHPValue
	// Env holds the env[NAME] settings by name.
	Env map[string]Setting

	// MaxExecutionTime is the pool's max_execution_time php value (0 = no
	// limit), or -1 when the pool does not set it and php.ini's value
	// applies. PHP counts it in CPU time on Linux, so a request waiting on
	// I/O outlives it.
	MaxExecutionTime time.Duration
	// MemoryLimit is the memory_limit php value as given, "" when not set.
	MemoryLimit string
	// ErrorLog is the error_log php value, where PHP itself logs; "" when
	// not set.
	ErrorLog string
}

// Options change how Load reads a configuration.
type Options struct {
	// Root, when set, is a directory that stands in for "/", for reading
	// the configuration of a container image or of a test fixture: the main
	// path and absolute include patterns are looked up under it. File names
	// in the Config are the ones php-fpm would see, without Root. Root is
	// not a security boundary: symbolic links are followed.
	Root string
	// Prefix is php-fpm's prefix, its -p option. When empty it is guessed
	// from the main file's path: the parent of an "etc" directory
	// (/usr/local/etc/php-fpm.conf gives /usr/local, php-fpm's own
	// <prefix>/etc/php-fpm.conf layout), /usr for /etc/php-fpm.conf and
	// Debian's /etc/php/<version>/fpm/php-fpm.conf (the prefix those
	// distributions build with), and otherwise the main file's directory.
	Prefix string
	// LookupEnv looks up ${NAME}; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

// Load reads the php-fpm configuration at path and every file it includes.
// lookupEnv looks up ${NAME}; nil means os.LookupEnv. The error is only for
// a main file that cannot be read; all other problems are warnings.
func Load(path string, lookupEnv func(string) (string, bool)) (*Config, error) {
	return LoadOptions(path, Options{LookupEnv: lookupEnv})
}

// LoadOptions is Load with Options.
func LoadOptions(path string, opts Options) (*Config, error) {
	// An absolute path lets an include cycle through the main file be
	// recognised; under Root every path is absolute already.
	if opts.Root == "" {
		path = absPath(path)
	} else if !filepath.IsAbs(path) {
		path = "/" + path
	}
	l := newLoader(filepath.Clean(path), opts)
	src, err := l.read(l.cfg.Path)
	if err != nil {
		return nil, err
	}
	l.file(l.cfg.Path, src)
	l.finish()
	return l.cfg, nil
}

// Parse reads one file's content as a php-fpm configuration named name,
// without following include directives. It is meant for tests and for
// checking a file before it is installed. lookupEnv nil means os.LookupEnv.
func Parse(name string, src []byte, lookupEnv func(string) (string, bool)) *Config {
	l := newLoader(name, Options{LookupEnv: lookupEnv})
	l.noInclude = true
	l.cfg.Files = append(l.cfg.Files, l.cfg.Path)
	l.file(l.cfg.Path, src)
	l.finish()
	return l.cfg
}

// Pool returns the pool named name, in any letter case as php-fpm matches
// section names, or nil.
func (c *Config) Pool(name string) *Pool {
	for _, p := range c.Pools {
		if equalFold(p.Name, name) {
			return p
		}
	}
	return nil
}

// defaultPrefix guesses php-fpm's prefix from the main file's path; see
// Options.Prefix.
func defaultPrefix(path string) string {
	dir := filepath.Dir(path)
	if dir == "/etc" {
		return "/usr"
	}
	if m, _ := filepath.Match("/etc/php/*/fpm", dir); m {
		return "/usr"
	}
	if filepath.Base(dir) == "etc" {
		return filepath.Dir(dir)
	}
	return dir
}

func lookupEnvOrOS(f func(string) (string, bool)) func(string) (string, bool) {
	if f == nil {
		return os.LookupEnv
	}
	return f
}
