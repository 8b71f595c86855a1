package diagnostics

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// completed explains a response php-fpm completed, from what PHP logged
// about the request (its FastCGI stderr, PHP's error log, php-fpm's log),
// from the request's size against PHP's limits, and from php-fpm's
// slowlog. Such responses pass through unchanged and are only logged. It
// returns nil when there is nothing worth noting, which for most requests
// it finds out without allocating, or with no more than a stat of PHP's
// error log when it follows one.
func (c *Classifier) completed(t *outcome.Trace) *Diagnosis {
	msgs := c.messages(t)
	if len(msgs) == 0 && len(t.Stderr) == 0 && !c.oversized(t) && !c.maybeSlow(t) {
		return nil // the common case, which must cost no allocation
	}
	d := &Diagnosis{Evidence: map[string]string{"script": t.Script}}
	switch {
	case c.bodyDiscarded(t, msgs, d):
	case c.diskFull(t, msgs, d):
	case c.scriptProblem(t, msgs, d):
	case phpError(msgs, d):
	case c.uploadTooLarge(t, d):
	case c.slowRequest(t, d):
	default:
		return nil
	}
	return d
}

// messageWait bounds how long a request's explanation waits for PHP's
// error log to be read up to the request's end.
const messageWait = 100 * time.Millisecond

// messages gathers what PHP logged about t, wherever it went. FastCGI
// stderr belongs to the request for sure; a log file's lines are taken when
// they arrived while the request ran and name its script, a file under its
// document root, or nothing (errors before the script ran), and, for a body
// PHP refused, its very size.
func (c *Classifier) messages(t *outcome.Trace) []fpm.Message {
	msgs := fpm.StderrMessages(t.Stderr)
	since := t.DialStart
	if since.IsZero() {
		return msgs
	}
	if c.PHPLog != nil {
		c.PHPLog.Catch(t.End, messageWait)
		for _, m := range c.PHPLog.Since(since) {
			if belongs(t, m) {
				msgs = append(msgs, m)
			}
		}
	}
	// Only a pool that catches its workers' output puts a request's
	// messages into php-fpm's log; without it, looking there costs every
	// request a system call for nothing.
	if c.Log != nil && (c.pool() == nil || c.pool().CatchWorkersOutput) {
		if len(msgs) == 0 && c.pool() != nil && c.pool().CatchWorkersOutput && c.suspect(t) {
			// php-fpm copies a worker's output into its log a moment
			// after the worker wrote it; wait for it only for the
			// requests that likely have something there, and only
			// when the pool copies it at all.
			c.Log.Find(since, messageWait, func(e fpm.Event) bool { return e.Kind == fpm.EventOutput })
		} else {
			after := t.End
			if c.errorsToWorkerOutput() {
				// Nothing tells whether the worker wrote anything:
				// give php-fpm the moment it takes to copy it.
				time.Sleep(workerOutputLag)
				after = time.Now()
			}
			c.Log.Catch(after, messageWait)
		}
		for _, e := range c.Log.Since(since, fpm.EventOutput) {
			if m, ok := fpm.ParseMessage(e.Output); ok && belongs(t, m) {
				m.Pid, m.Source = e.Pid, c.Log.Path
				msgs = append(msgs, m)
			}
		}
	}
	return msgs
}

// workerOutputLag is how long php-fpm may take to copy what a worker wrote
// to its standard error into its log.
const workerOutputLag = 10 * time.Millisecond

// errorsToWorkerOutput reports whether PHP's errors go to the workers'
// standard error and php-fpm copies them into its log: error_log =
// /proc/self/fd/2 with catch_workers_output. They then reach the log a
// moment after the request ended.
func (c *Classifier) errorsToWorkerOutput() bool {
	if c.pool() == nil || !c.pool().CatchWorkersOutput {
		return false
	}
	return fpm.ToWorkerStderr(fpm.PHPSetting(c.pool(), c.phpIni(), "error_log").Value)
}

// suspect reports whether a completed request likely has PHP messages:
// it failed with a server error, or its body was larger than PHP takes.
func (c *Classifier) suspect(t *outcome.Trace) bool {
	return t.Status >= 500 || c.oversized(t)
}

// oversized reports whether the request's body is larger than
// post_max_size or upload_max_filesize, without allocating.
func (c *Classifier) oversized(t *outcome.Trace) bool {
	if t.ContentLength == 0 {
		return false
	}
	for _, name := range [...]string{"post_max_size", "upload_max_filesize"} {
		if limit, _ := fpm.ParseSize(c.phpValue(t, name)); limit > 0 && t.ContentLength > limit {
			return true
		}
	}
	return false
}

// maybeSlow reports whether the request ran long enough for php-fpm's
// slowlog to catch it.
func (c *Classifier) maybeSlow(t *outcome.Trace) bool {
	p := c.pool()
	return p != nil && p.RequestSlowlogTimeout > 0 && t.End.Sub(t.DialEnd) >= p.RequestSlowlogTimeout
}

// belongs reports whether m, read from a log file, is about request t.
func belongs(t *outcome.Trace, m fpm.Message) bool {
	if n := rePostMax.FindStringSubmatch(m.Text); n != nil {
		return n[1] == strconv.FormatInt(t.ContentLength, 10)
	}
	switch {
	case m.File == "":
		return true
	case m.File == t.Script:
		return true
	case t.DocumentRoot != "":
		return strings.HasPrefix(m.File, strings.TrimRight(t.DocumentRoot, "/")+"/")
	}
	return false
}

var (
	rePostMax   = regexp.MustCompile(`POST Content-Length of (\d+) bytes exceeds the limit of (\d+) bytes`)
	reInputVars = regexp.MustCompile(`Input variables exceeded (\d+)`)
)

// find returns the first message whose text contains one of markers.
func find(msgs []fpm.Message, markers ...string) (fpm.Message, bool) {
	for _, m := range msgs {
		for _, marker := range markers {
			if strings.Contains(m.Text, marker) {
				return m, true
			}
		}
	}
	return fpm.Message{}, false
}

// quote puts a PHP message into d's evidence and says where it was read.
func quote(d *Diagnosis, m fpm.Message) {
	d.Evidence["php_message"] = quoteBounded(m.Raw, 500)
	d.Evidence["php_message_from"] = m.Source
	if m.Pid != 0 {
		d.FPMPid = m.Pid
	}
}

// phpSetting returns the value PHP uses for an ini setting in t's request
// and where it comes from: the PHP_VALUE nginx sent for the request
// (unless the pool fixes it with php_admin_value), the pool, php.ini, or
// PHP's default.
func (c *Classifier) phpSetting(t *outcome.Trace, name string) (value, describe string) {
	if v, ok := c.fromPHPValue(t, name); ok {
		return v, fmt.Sprintf("%s = %s (the PHP_VALUE param nginx sends with the request)", name, v)
	}
	s := fpm.PHPSetting(c.pool(), c.phpIni(), name)
	describe = s.Describe(name)
	if c.phpIni() == nil && !s.IsSet() {
		describe += ", as fcgiscope found no php.ini to read (FCGISCOPE_PHP_INI)"
	}
	return s.Value, describe
}

// phpValue is phpSetting's value alone, found without allocating.
func (c *Classifier) phpValue(t *outcome.Trace, name string) string {
	if v, ok := c.fromPHPValue(t, name); ok {
		return v
	}
	return fpm.PHPSetting(c.pool(), c.phpIni(), name).Value
}

// fromPHPValue returns the value the request's PHP_VALUE param gives the
// setting, unless the pool fixes it with php_admin_value.
func (c *Classifier) fromPHPValue(t *outcome.Trace, name string) (string, bool) {
	if c.pool() != nil && c.pool().PHPValues[name].Admin {
		return "", false
	}
	for rest := t.PHPValue; rest != ""; {
		var line string
		line, rest, _ = strings.Cut(rest, "\n")
		if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == name {
			return strings.Trim(strings.TrimSpace(v), `"`), true
		}
	}
	return "", false
}

// phpSize is phpSetting for a size; 0 means no limit or unknown.
func (c *Classifier) phpSize(t *outcome.Trace, name string) (int64, string) {
	v, describe := c.phpSetting(t, name)
	n, _ := fpm.ParseSize(v)
	return n, describe
}

// size says a number of bytes as a person reads it.
func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%d bytes (%.1f GiB)", n, float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%d bytes (%.1f MiB)", n, float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%d bytes (%.1f KiB)", n, float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// bodyDiscarded names a request whose body PHP threw away: larger than
// post_max_size, or with more fields than max_input_vars. PHP says so in
// its log; without the log, the sizes say it for post_max_size.
func (c *Classifier) bodyDiscarded(t *outcome.Trace, msgs []fpm.Message, d *Diagnosis) bool {
	ev := d.Evidence
	if m, ok := find(msgs, "Input variables exceeded"); ok {
		quote(d, m)
		d.Cause = CauseBodyDiscarded
		n := reInputVars.FindStringSubmatch(m.Text)[1]
		_, vars := c.phpSetting(t, "max_input_vars")
		ev["max_input_vars"] = n
		d.Detail = fmt.Sprintf("PHP kept only the first %s input variables of the request and dropped the rest, as %s; the script saw part of the form and answered %d. PHP's words: %q.", n, vars, t.Status, m.Text)
		d.Hints = []string{fmt.Sprintf("Raise %s above the number of fields the form sends, or send fewer fields (large forms, arrays of inputs).", vars)}
		return true
	}
	limit, describe := c.phpSize(t, "post_max_size")
	length := t.ContentLength
	how := "fcgiscope judges by the sizes, as PHP's message about it was not seen"
	if m, ok := find(msgs, "POST Content-Length of"); ok {
		quote(d, m)
		// PHP's own numbers: the limit it applied, whatever set it.
		n := rePostMax.FindStringSubmatch(m.Text)
		length, _ = strconv.ParseInt(n[1], 10, 64)
		limit, _ = strconv.ParseInt(n[2], 10, 64)
		how = "PHP's message says so"
	} else if limit == 0 || length <= limit || !strings.EqualFold(t.Method, "POST") {
		return false
	}
	d.Cause = CauseBodyDiscarded
	ev["content_length"] = strconv.FormatInt(length, 10)
	ev["post_max_size"] = strconv.FormatInt(limit, 10)
	d.Detail = fmt.Sprintf("PHP threw the whole request body away: it is %s, over %s. The script ran with empty $_POST and $_FILES and answered %d (%s).", size(length), describe, t.Status, how)
	d.Hints = []string{fmt.Sprintf("Raise %s above the largest body the application takes, and %s.", describe, c.bodyLimitHint())}
	return true
}

// bodyLimitHint says how nginx's client_max_body_size goes with PHP's
// limits.
func (c *Classifier) bodyLimitHint() string {
	cmb := c.front().ClientMaxBodySize()
	return fmt.Sprintf("keep nginx's client_max_body_size = %s in step with it: nginx refuses a larger body with its own 413, where PHP drops it without a word", cmb)
}

// uploadTooLarge names a file upload larger than upload_max_filesize. PHP
// tells only the script (UPLOAD_ERR_INI_SIZE) and logs nothing, so this
// is what the sizes imply, and says so.
func (c *Classifier) uploadTooLarge(t *outcome.Trace, d *Diagnosis) bool {
	const multipart = "multipart/form-data"
	if len(t.RequestType) < len(multipart) || !strings.EqualFold(t.RequestType[:len(multipart)], multipart) {
		return false
	}
	if on, _ := c.phpSetting(t, "file_uploads"); on == "0" || strings.EqualFold(on, "off") {
		return false
	}
	limit, describe := c.phpSize(t, "upload_max_filesize")
	if limit == 0 || t.ContentLength <= limit {
		return false
	}
	d.Cause = CauseUploadTooLarge
	d.Evidence["content_length"] = strconv.FormatInt(t.ContentLength, 10)
	d.Evidence["upload_max_filesize"] = strconv.FormatInt(limit, 10)
	d.Detail = fmt.Sprintf("The upload's body is %s and %s. If it carried one file, PHP refused that file: the script saw it in $_FILES with error UPLOAD_ERR_INI_SIZE (1) and no data, and PHP logged nothing. fcgiscope judges by the sizes alone: several smaller files would each have fit. The script answered %d.", size(t.ContentLength), describe, t.Status)
	d.Hints = []string{fmt.Sprintf("Raise %s to the largest file users send, post_max_size above it, and %s.", describe, c.bodyLimitHint())}
	return true
}

// phpError names a fatal error or an exhausted memory_limit.
func phpError(msgs []fpm.Message, d *Diagnosis) bool {
	if m, ok := find(msgs, "Allowed memory size of"); ok {
		quote(d, m)
		d.Cause = CauseMemory
		d.Detail = "The script hit PHP's memory_limit: " + m.Text + at(m.Where()) + "."
		d.Hints = []string{"Find what the script loads into memory (large arrays, whole files, ORM result sets), or raise memory_limit for it."}
		return true
	}
	for _, m := range msgs {
		if m.Level == "Fatal error" || m.Level == "Parse error" {
			quote(d, m)
			d.Cause = CausePHPFatal
			d.Detail = fmt.Sprintf("The script stopped with a PHP %s: %s%s.", strings.ToLower(m.Level), m.Text, at(m.Where()))
			d.Hints = []string{"Fix the error at the file and line it names; with display_errors off the client sees an empty 500."}
			return true
		}
	}
	return false
}

// slowRequest names a request that completed but that php-fpm's slowlog
// caught, with the stack it took.
func (c *Classifier) slowRequest(t *outcome.Trace, d *Diagnosis) bool {
	p := c.pool()
	if !c.maybeSlow(t) || t.Script == "" {
		return false
	}
	// php-fpm logs "executing too slow" and writes the slowlog while the
	// script still runs; the slowlog entry is taken as whole a moment
	// after its last line.
	wait := 200 * time.Millisecond
	var logged fpm.Event
	var haveLine bool
	if c.Log != nil {
		logged, haveLine = c.Log.Find(t.DialStart, wait, func(e fpm.Event) bool { return e.Kind == fpm.EventSlow && e.Script == t.Script })
	}
	var entry fpm.SlowEntry
	var haveEntry bool
	if c.Slowlog != nil {
		if haveLine {
			entry, haveEntry = c.Slowlog.Find(logged.Pid, t.DialStart, wait)
		} else {
			entry, haveEntry = c.Slowlog.FindScript(t.Script, t.DialStart, wait)
		}
	}
	if !haveLine && !haveEntry {
		return false
	}
	d.Cause = CauseSlowRequest
	ev := d.Evidence
	ev["request_slowlog_timeout"] = p.RequestSlowlogTimeout.String()
	if haveLine {
		d.FPMPid = logged.Pid
		ev["fpm_log_line"] = logged.Line
	}
	where := p.Settings["request_slowlog_timeout"].Where()
	d.Detail = fmt.Sprintf("The request took %s, longer than request_slowlog_timeout = %s%s, and php-fpm's slowlog caught it", seconds(t.End.Sub(t.DialEnd)), p.RequestSlowlogTimeout, at(where))
	if haveEntry {
		d.FPMPid = entry.PID
		var frames []string
		for _, f := range entry.Frames {
			frames = append(frames, f.String())
		}
		ev["slowlog"] = strings.Join(frames, " <- ")
		if top, ok := entry.Top(); ok {
			d.Detail += fmt.Sprintf(" in %s", top)
		} else {
			d.Detail += " in its top-level code"
		}
		d.Detail += "."
		d.Hints = []string{fmt.Sprintf("Look at the stack in the evidence (innermost first; also in %s): that is where the script spent its time.", c.Slowlog.Path)}
	} else {
		d.Detail += ", but its stack is not in the slowlog fcgiscope reads (php-fpm may not ptrace its workers here: SYS_PTRACE in a container)."
		d.Hints = []string{"Give php-fpm the ptrace capability, or read the slowlog setting's file where php-fpm runs."}
	}
	return true
}
