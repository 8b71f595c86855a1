package fpm

import (
	"strings"
	"time"
)

// kind is how php-fpm parses a directive's value.
type kind int

const (
	kindString kind = iota
	kindInt
	kindTime
	kindBool
	kindPM
	kindRlimitCore
	kindLogLevel
	kindSyslogFacility
)

type directive struct{ kind kind }

// globalDirectives are the [global] directives of php-fpm 8.2 as Debian
// and the official Docker image build it (with syslog and systemd). include
// is handled apart.
var globalDirectives = map[string]directive{
	"pid":                         {kindString},
	"error_log":                   {kindString},
	"syslog.ident":                {kindString},
	"syslog.facility":             {kindSyslogFacility},
	"log_buffering":               {kindBool},
	"log_level":                   {kindLogLevel},
	"log_limit":                   {kindInt},
	"emergency_restart_threshold": {kindInt},
	"emergency_restart_interval":  {kindTime},
	"process_control_timeout":     {kindTime},
	"process.max":                 {kindInt},
	"process.priority":            {kindInt},
	"daemonize":                   {kindBool},
	"rlimit_files":                {kindInt},
	"rlimit_core":                 {kindRlimitCore},
	"events.mechanism":            {kindString},
	"systemd_interval":            {kindTime},
}

// poolDirectives are the pool directives of php-fpm 8.2 on Linux, with
// POSIX ACL and AppArmor support as Debian builds it. listen.setfib is
// FreeBSD only. The array directives (php_value[...] and the like) are in
// arrayNames.
var poolDirectives = map[string]directive{
	"prefix":                      {kindString},
	"user":                        {kindString},
	"group":                       {kindString},
	"listen":                      {kindString},
	"listen.backlog":              {kindInt},
	"listen.acl_users":            {kindString},
	"listen.acl_groups":           {kindString},
	"listen.owner":                {kindString},
	"listen.group":                {kindString},
	"listen.mode":                 {kindString},
	"listen.allowed_clients":      {kindString},
	"process.priority":            {kindInt},
	"process.dumpable":            {kindBool},
	"pm":                          {kindPM},
	"pm.max_children":             {kindInt},
	"pm.start_servers":            {kindInt},
	"pm.min_spare_servers":        {kindInt},
	"pm.max_spare_servers":        {kindInt},
	"pm.max_spawn_rate":           {kindInt},
	"pm.process_idle_timeout":     {kindTime},
	"pm.max_requests":             {kindInt},
	"pm.status_path":              {kindString},
	"pm.status_listen":            {kindString},
	"ping.path":                   {kindString},
	"ping.response":               {kindString},
	"access.log":                  {kindString},
	"access.format":               {kindString},
	"slowlog":                     {kindString},
	"request_slowlog_timeout":     {kindTime},
	"request_slowlog_trace_depth": {kindInt},
	"request_terminate_timeout":   {kindTime},
	"request_terminate_timeout_track_finished": {kindBool},
	"rlimit_files":              {kindInt},
	"rlimit_core":               {kindRlimitCore},
	"chroot":                    {kindString},
	"chdir":                     {kindString},
	"catch_workers_output":      {kindBool},
	"decorate_workers_output":   {kindBool},
	"clear_env":                 {kindBool},
	"security.limit_extensions": {kindString},
	"apparmor_hat":              {kindString},
}

// validate returns php-fpm's complaint about value for a directive of kind
// k, or "".
func validate(k kind, value string) string {
	switch k {
	case kindInt:
		if !isInteger(value) {
			return "is not a valid number (greater or equal than zero)"
		}
	case kindTime:
		if value == "" {
			return "invalid time value"
		}
		if _, ok := timeUnit(value[len(value)-1]); !ok {
			return "unknown suffix used in time value (use s, m, h or d)"
		}
	case kindBool:
		if _, ok := parseBool(value); !ok {
			return "invalid boolean value (use yes or no)"
		}
	case kindPM:
		if _, ok := parsePM(value); !ok {
			return "invalid process manager (static, dynamic or ondemand)"
		}
	case kindRlimitCore:
		if equalFold(value, "unlimited") {
			return ""
		}
		if !isInteger(value) {
			return "is not a valid number (greater or equal than zero)"
		}
		if atoi(value) < 0 {
			return "must be greater than zero or 'unlimited'"
		}
	case kindLogLevel:
		switch lowerASCII(value) {
		case "debug", "notice", "warning", "warn", "error", "alert":
		default:
			return "invalid value for 'log_level' (alert, error, warning, notice or debug)"
		}
	case kindSyslogFacility:
		switch strings.ToUpper(value) {
		case "AUTH", "AUTHPRIV", "CRON", "DAEMON", "FTP", "KERN", "LPR", "MAIL",
			"NEWS", "SYSLOG", "USER", "UUCP", "LOCAL0", "LOCAL1", "LOCAL2",
			"LOCAL3", "LOCAL4", "LOCAL5", "LOCAL6", "LOCAL7":
		default:
			return "invalid value"
		}
	}
	return ""
}

// isInteger is php-fpm's integer check: an optional leading '-' and digits.
// The empty string passes and reads as 0.
func isInteger(s string) bool {
	for i := 0; i < len(s); i++ {
		if i == 0 && s[i] == '-' {
			continue
		}
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// toInt converts a value that passed isInteger.
func toInt(s string) int {
	n := atoi(s)
	if n > 1<<31-1 {
		return 1<<31 - 1
	}
	if n < -1<<31 {
		return -1 << 31
	}
	return int(n)
}

const second = time.Second

// timeUnit returns the seconds a time value's last character stands for;
// a digit means seconds.
func timeUnit(c byte) (int64, bool) {
	switch {
	case c == 's' || ('0' <= c && c <= '9'):
		return 1, true
	case c == 'm':
		return 60, true
	case c == 'h':
		return 3600, true
	case c == 'd':
		return 86400, true
	}
	return 0, false
}

// timeSeconds converts a time value as php-fpm does: the unit is the last
// character, the number is atoi of the rest ("1.5m" is 60 seconds).
func timeSeconds(v string) int64 {
	if v == "" {
		return 0
	}
	last := v[len(v)-1]
	mult, ok := timeUnit(last)
	if !ok {
		return 0
	}
	n := v
	if last < '0' || last > '9' {
		n = v[:len(v)-1]
	}
	s := atoi(n) * mult
	// php-fpm keeps seconds in an int.
	if s > 1<<31-1 {
		s = 1<<31 - 1
	}
	if s < -1<<31 {
		s = -1 << 31
	}
	return s
}

func formatSeconds(s int64) string {
	return (time.Duration(s) * second).String()
}

// parseBool accepts what php-fpm 8.2 accepts once the INI scanner has
// turned bare yes/on/true into "1" and no/off/false/none into "": the
// quoted forms must be lower case.
func parseBool(v string) (value, ok bool) {
	switch v {
	case "1", "yes", "on", "true":
		return true, true
	case "", "0", "no", "off", "false", "none":
		return false, true
	}
	return false, false
}

func parsePM(v string) (string, bool) {
	switch lowerASCII(v) {
	case "static", "dynamic", "ondemand":
		return lowerASCII(v), true
	}
	return "", false
}

// finish computes the typed fields and makes php-fpm's checks of the whole
// configuration (fpm_conf_post_process and fpm_conf_process_all_pools).
func (l *loader) finish() {
	c := l.cfg
	if s, ok := c.Global["error_log"]; ok {
		c.ErrorLog = s.Value
	}
	if s, ok := c.Global["process_control_timeout"]; ok && validate(kindTime, s.Value) == "" {
		c.ProcessControlTimeout = time.Duration(timeSeconds(s.Value)) * second
	}
	if s, ok := c.Global["log_limit"]; ok && isInteger(s.Value) && toInt(s.Value) < 512 {
		l.reject(s.File, s.Line, "log_limit = %s: it must be at least 512", s.Value)
	}
	if s, ok := c.Global["process.max"]; ok && isInteger(s.Value) && toInt(s.Value) < 0 {
		l.reject(s.File, s.Line, "process.max = %s: it cannot be negative", s.Value)
	}
	if s, ok := c.Global["process.priority"]; ok {
		checkPriority(l, "[global]", s)
	}
	if s, ok := c.Global["events.mechanism"]; ok {
		switch s.Value {
		case "epoll", "poll", "select":
		default:
			l.reject(s.File, s.Line, "events.mechanism = %s is not available on Linux (epoll, poll or select)", s.Value)
		}
	}
	if len(c.Pools) == 0 {
		l.reject(c.Path, 0, "no pool defined: at least one pool section is needed")
	}
	for _, p := range c.Pools {
		l.finishPool(p)
	}
	// php-fpm compares the listen strings, after $pool and the prefix.
	first := map[string]*Pool{}
	for _, p := range c.Pools {
		if p.Listen.Value == "" {
			continue
		}
		if q, ok := first[listenKey(p)]; ok {
			l.reject(p.Listen.File, p.Listen.Line, "[pool %s] listen = %s is already used by pool %s (%s)", p.Name, p.Listen.Value, q.Name, q.Listen.Where())
			continue
		}
		first[listenKey(p)] = p
	}
}

func listenKey(p *Pool) string {
	if p.ListenAddr.Network == "unix" {
		return p.ListenAddr.Address
	}
	return p.Listen.Value
}

func checkPriority(l *loader, where string, s Setting) {
	if !isInteger(s.Value) {
		return
	}
	if n := toInt(s.Value); n < -19 || n > 20 {
		l.reject(s.File, s.Line, "%s process.priority = %d: it must be from -19 to 20", where, n)
	}
}

func (l *loader) finishPool(p *Pool) {
	where := "[pool " + p.Name + "]"
	get := func(k string) (Setting, bool) {
		s, ok := p.Settings[k]
		return s, ok
	}
	str := func(k string) string { return p.Settings[k].Value }
	// Values php-fpm could not parse were reported already; the field
	// keeps its default for them.
	integer := func(k string, dst *int) {
		if s, ok := get(k); ok && isInteger(s.Value) {
			*dst = toInt(s.Value)
		}
	}
	duration := func(k string, dst *time.Duration) {
		if s, ok := get(k); ok && validate(kindTime, s.Value) == "" {
			*dst = time.Duration(timeSeconds(s.Value)) * second
		}
	}
	boolean := func(k string, dst *bool) {
		if s, ok := get(k); ok {
			if b, ok := parseBool(s.Value); ok {
				*dst = b
			}
		}
	}

	p.Prefix = str("prefix")
	if p.Prefix != "" && !strings.HasPrefix(p.Prefix, "/") {
		p.Prefix = joinPath(l.cfg.Prefix, p.Prefix)
	}
	prefix := l.cfg.Prefix
	if p.Prefix != "" {
		prefix = p.Prefix
	}
	p.Listen = p.Settings["listen"]
	p.ListenOwner = str("listen.owner")
	p.ListenGroup = str("listen.group")
	p.ListenMode = str("listen.mode")
	p.ListenAllowedClients = str("listen.allowed_clients")
	integer("listen.backlog", &p.ListenBacklog)
	p.User = str("user")
	p.Group = str("group")
	p.Chroot = str("chroot")
	p.Chdir = str("chdir")
	if s, ok := get("pm"); ok {
		p.PM, _ = parsePM(s.Value)
	}
	integer("pm.max_children", &p.MaxChildren)
	integer("pm.start_servers", &p.StartServers)
	integer("pm.min_spare_servers", &p.MinSpare)
	integer("pm.max_spare_servers", &p.MaxSpare)
	integer("pm.max_requests", &p.MaxRequests)
	duration("pm.process_idle_timeout", &p.ProcessIdleTimeout)
	duration("request_terminate_timeout", &p.RequestTerminateTimeout)
	boolean("request_terminate_timeout_track_finished", &p.RequestTerminateTimeoutTrackFinished)
	duration("request_slowlog_timeout", &p.RequestSlowlogTimeout)
	p.Slowlog = str("slowlog")
	p.AccessLog = str("access.log")
	p.AccessFormat = str("access.format")
	if _, ok := get("access.format"); !ok && p.AccessLog != "" {
		p.AccessFormat = `%R - %u %t "%m %r" %s`
	}
	boolean("catch_workers_output", &p.CatchWorkersOutput)
	boolean("decorate_workers_output", &p.DecorateWorkersOutput)
	boolean("clear_env", &p.ClearEnv)
	p.StatusPath = str("pm.status_path")
	p.PingPath = str("ping.path")
	if s, ok := get("security.limit_extensions"); ok {
		p.SecurityLimitExtensions = strings.Fields(s.Value)
	}
	if v, ok := p.PHPValues["max_execution_time"]; ok {
		// PHP reads it with strtol, so "30s" is 30 seconds.
		p.MaxExecutionTime = time.Duration(atoi(v.Value)) * second
	}
	p.MemoryLimit = p.PHPValues["memory_limit"].Value
	p.ErrorLog = p.PHPValues["error_log"].Value

	// listen
	if p.Listen.Value == "" {
		l.reject(p.File, p.Line, "%s no listen address is defined", where)
	} else {
		addr, problem, fatal := parseListen(p.Listen.Value, prefix)
		p.ListenAddr = addr
		switch {
		case fatal:
			l.reject(p.Listen.File, p.Listen.Line, "%s listen = %s: %s", where, p.Listen.Value, problem)
		case problem != "":
			l.warn(p.Listen.File, p.Listen.Line, "%s listen = %s: %s", where, p.Listen.Value, problem)
		}
	}
	if s, ok := get("pm.status_listen"); ok && s.Value != "" {
		addr, problem, fatal := parseListen(s.Value, prefix)
		switch {
		case fatal:
			l.reject(s.File, s.Line, "%s pm.status_listen = %s: %s", where, s.Value, problem)
		case problem != "":
			l.warn(s.File, s.Line, "%s pm.status_listen = %s: %s", where, s.Value, problem)
			p.StatusListen = addr
		default:
			p.StatusListen = addr
		}
	}
	if s, ok := get("process.priority"); ok {
		checkPriority(l, where, s)
	}

	// pm
	pmSet, _ := get("pm")
	switch p.PM {
	case "":
		if !pmSet.IsSet() {
			l.reject(p.File, p.Line, "%s pm is not set (static, dynamic or ondemand)", where)
		}
	case "dynamic":
		l.checkDynamic(p, where)
	case "ondemand":
		if p.ProcessIdleTimeout < second {
			s := p.Settings["pm.process_idle_timeout"]
			l.reject(s.File, s.Line, "%s pm.process_idle_timeout = %s: it must be at least 1s with pm = ondemand", where, s.Value)
		}
		p.StartServers, p.MinSpare, p.MaxSpare = 0, 0, 0
	}
	if p.PM != "" && p.MaxChildren < 1 {
		s, ok := get("pm.max_children")
		if !ok {
			s = Setting{File: p.File, Line: p.Line}
		}
		l.reject(s.File, s.Line, "%s pm.max_children must be a positive number", where)
	}

	// status and ping
	if s, ok := get("pm.status_path"); ok && s.Value != "" {
		l.checkURIPath(s, where, "status path", !p.Settings["pm.status_listen"].IsSet())
	}
	if s, ok := get("ping.path"); ok && s.Value != "" {
		l.checkURIPath(s, where, "ping path", true)
		if r, ok := get("ping.response"); !ok {
			p.PingResponse = "pong"
		} else if r.Value == "" {
			l.reject(r.File, r.Line, "%s ping.response is empty", where)
		} else {
			p.PingResponse = r.Value
		}
	}

	// slowlog
	if p.RequestSlowlogTimeout != 0 {
		s := p.Settings["request_slowlog_timeout"]
		if p.Slowlog == "" {
			l.reject(s.File, s.Line, "%s request_slowlog_timeout needs slowlog to be set", where)
		}
		if p.RequestTerminateTimeout != 0 && p.RequestSlowlogTimeout > p.RequestTerminateTimeout {
			l.reject(s.File, s.Line, "%s request_slowlog_timeout (%s) cannot be greater than request_terminate_timeout (%s)", where, p.RequestSlowlogTimeout, p.RequestTerminateTimeout)
		}
	}
	if s, ok := get("request_slowlog_trace_depth"); ok && isInteger(s.Value) && toInt(s.Value) != 0 {
		if p.Slowlog == "" {
			l.reject(s.File, s.Line, "%s request_slowlog_trace_depth needs slowlog to be set", where)
		}
		if toInt(s.Value) < 0 {
			l.reject(s.File, s.Line, "%s request_slowlog_trace_depth must be a positive number", where)
		}
	}
}

func (l *loader) checkDynamic(p *Pool, where string) {
	at := func(k string) Setting {
		if s, ok := p.Settings[k]; ok {
			return s
		}
		return Setting{File: p.File, Line: p.Line}
	}
	minS, maxS := at("pm.min_spare_servers"), at("pm.max_spare_servers")
	switch {
	case p.MinSpare <= 0:
		l.reject(minS.File, minS.Line, "%s pm.min_spare_servers (%d) must be a positive number with pm = dynamic", where, p.MinSpare)
	case p.MaxSpare <= 0:
		l.reject(maxS.File, maxS.Line, "%s pm.max_spare_servers (%d) must be a positive number with pm = dynamic", where, p.MaxSpare)
	case p.MinSpare > p.MaxChildren || p.MaxSpare > p.MaxChildren:
		l.reject(maxS.File, maxS.Line, "%s pm.min_spare_servers (%d) and pm.max_spare_servers (%d) cannot be greater than pm.max_children (%d)", where, p.MinSpare, p.MaxSpare, p.MaxChildren)
	case p.MaxSpare < p.MinSpare:
		l.reject(maxS.File, maxS.Line, "%s pm.max_spare_servers (%d) cannot be less than pm.min_spare_servers (%d)", where, p.MaxSpare, p.MinSpare)
	case p.StartServers <= 0:
		p.StartServers = p.MinSpare + (p.MaxSpare-p.MinSpare)/2
	case p.StartServers < p.MinSpare || p.StartServers > p.MaxSpare:
		s := at("pm.start_servers")
		l.reject(s.File, s.Line, "%s pm.start_servers (%d) must be from pm.min_spare_servers (%d) to pm.max_spare_servers (%d)", where, p.StartServers, p.MinSpare, p.MaxSpare)
	}
	if s, ok := p.Settings["pm.max_spawn_rate"]; ok && isInteger(s.Value) && toInt(s.Value) < 1 {
		l.reject(s.File, s.Line, "%s pm.max_spawn_rate must be a positive number", where)
	}
}

// checkURIPath makes php-fpm's checks of pm.status_path and ping.path.
func (l *loader) checkURIPath(s Setting, where, what string, needTwo bool) {
	v := s.Value
	switch {
	case !strings.HasPrefix(v, "/"):
		l.reject(s.File, s.Line, "%s the %s %q must start with '/'", where, what, v)
	case needTwo && len(v) < 2:
		l.reject(s.File, s.Line, "%s the %s %q is too short", where, what, v)
	default:
		for i := 0; i < len(v); i++ {
			c := v[i]
			if !isAlnum(c) && !strings.ContainsRune("/-_.~", rune(c)) {
				l.reject(s.File, s.Line, "%s the %s %q may only contain letters, digits and / _ - . ~", where, what, v)
				return
			}
		}
	}
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// joinPath joins like php-fpm's "%s/%s", then cleans.
func joinPath(dir, p string) string {
	return cleanPath(dir + "/" + p)
}
