package diagnostics

// Cause is one entry of the cause catalogue: every request that failed, or
// that php-fpm completed with a problem, gets exactly one, and its ID is
// what the page, the X-Fcgiscope-Cause header, the log line and the metrics
// all say. The catalogue below is the one source of what a cause is: the
// README's table of causes is generated from it.
//
// Adding a cause takes an entry here (and in Causes), a case in the
// classifier that produces it, and a case in TestEveryCauseIsProduced.
type Cause struct {
	// ID is stable; people grep for it and alert on it.
	ID string
	// Status is the HTTP status of the replacement response. Causes that
	// are only logged carry the status the log line reports.
	Status int
	// AltStatus, when set, is the status the cause takes instead in the
	// circumstance AltWhen names; a Diagnosis says which applies.
	AltStatus int
	AltWhen   string
	// Title is the one-line headline.
	Title string
	// Meaning says what happened, for the README and the dashboard.
	Meaning string
	// Fix says what to change, in general; a Diagnosis's hints say it for
	// the request at hand.
	Fix string
	// LogOnly causes never replace a response: the client already has
	// one, or nobody is left to send one to.
	LogOnly bool
}

// The catalogue, in the order of Causes.
var (
	CauseRefused = &Cause{ID: "upstream_refused", Status: 502,
		Title:   "Nothing is listening at the php-fpm address",
		Meaning: "nothing listens at the TCP address",
		Fix:     "start php-fpm; the hint lists the FastCGI servers that do answer on this host, with the `FCGISCOPE_UPSTREAM` / `fastcgi_pass` value to use"}
	CauseSocketMissing = &Cause{ID: "upstream_socket_missing", Status: 502,
		Title:   "The php-fpm socket file does not exist",
		Meaning: "the unix socket file does not exist",
		Fix:     "start php-fpm, or point at one of the sockets the hint lists"}
	CauseSocketStale = &Cause{ID: "upstream_socket_stale", Status: 502,
		Title:   "The php-fpm socket exists but nobody accepts on it",
		Meaning: "the socket file exists but nobody accepts (php-fpm was killed)",
		Fix:     "start php-fpm; it replaces the stale file"}
	CausePermissionDenied = &Cause{ID: "upstream_permission_denied", Status: 502,
		Title:   "Not allowed to connect to the php-fpm socket",
		Meaning: "fcgiscope's user may not open the socket; the evidence names the owner, group, mode and fcgiscope's user",
		Fix:     "fix `listen.owner`/`listen.group`/`listen.mode` in the pool"}
	CauseBacklogFull = &Cause{ID: "upstream_backlog_full", Status: 503,
		Title:   "php-fpm's listen queue is full",
		Meaning: "every worker busy and the unix socket's listen queue full",
		Fix:     "more `pm.max_children`, a larger `listen.backlog`, faster scripts"}
	CauseConnectTimeout = &Cause{ID: "upstream_connect_timeout", Status: 504,
		Title:   "php-fpm did not accept the connection in time",
		Meaning: "php-fpm did not accept in `FCGISCOPE_CONNECT_TIMEOUT` (a full TCP backlog drops connections)",
		Fix:     "more `pm.max_children`, a larger `listen.backlog`, faster scripts"}
	CauseDNSFailed = &Cause{ID: "upstream_dns_failed", Status: 502, AltStatus: 504, AltWhen: "the lookup timed out",
		Title:   "The php-fpm host name does not resolve",
		Meaning: "the upstream host name does not resolve",
		Fix:     "fix the name, or use php-fpm's IP address or unix socket"}
	CauseNotFastCGI = &Cause{ID: "upstream_not_fastcgi", Status: 502,
		Title:   "The upstream does not speak FastCGI",
		Meaning: "something answered, but not in FastCGI (an HTTP server)",
		Fix:     "point at php-fpm's `listen` address"}
	CauseProtocolError = &Cause{ID: "upstream_protocol_error", Status: 502,
		Title:   "The upstream sent malformed FastCGI",
		Meaning: "malformed FastCGI: bad records, no STDOUT, CGI headers that never end",
		Fix:     "check what sits at the address"}
	CauseHeadTooBig = &Cause{ID: "response_header_too_big", Status: 502,
		Title:   "The response's headers do not fit nginx's fastcgi_buffer_size",
		Meaning: "the response's header block, as nginx buffers it (FastCGI framing included), is larger than `fastcgi_buffer_size`; nginx would answer a bare 502 \"upstream sent too big header\". Replaced when nginx's setting is known, else logged when nginx drops the connection after it",
		Fix:     "raise `fastcgi_buffer_size` (and `fastcgi_buffers`) to the value the detail gives, or send smaller headers (cookies, debug headers)"}
	CauseInvalidHeader = &Cause{ID: "upstream_invalid_header", Status: 502,
		Title:   "php-fpm sent a header line nginx refuses",
		Meaning: "a CGI header line nginx rejects as invalid (a space or control character in a name, a NUL byte, a stray CR, a Status that is not three digits); the evidence quotes the line",
		Fix:     "find what the script prints into its headers: output before header(), a header value with a line break"}
	CauseOverloaded = &Cause{ID: "upstream_overloaded", Status: 503,
		Title:   "php-fpm refused the request as overloaded",
		Meaning: "END_REQUEST with OVERLOADED, CANT_MPX_CONN or UNKNOWN_ROLE",
		Fix:     "give the application more capacity"}
	CauseRejectedRequest = &Cause{ID: "upstream_rejected_request", Status: 502,
		Title:   "php-fpm refused the request without a word",
		Meaning: "php-fpm closed the connection at once, before any record, on a request it does not take: a role other than RESPONDER (php-fpm runs no AUTHORIZER or FILTER), or params longer than one FastCGI record (64 KiB); nginx sends neither",
		Fix:     "send RESPONDER requests with params that fit a record, as nginx does; check the FastCGI client in front of fcgiscope"}
	CauseWorkerTimeout = &Cause{ID: "worker_timeout_killed", Status: 502,
		Title:   "php-fpm killed the worker: request_terminate_timeout",
		Meaning: "php-fpm killed the worker at `request_terminate_timeout`; the page names the value and the file and line it is set in",
		Fix:     "make the script faster or raise the limit"}
	CauseWorkerCrashed = &Cause{ID: "worker_crashed", Status: 502,
		Title:   "The php-fpm worker crashed",
		Meaning: "the worker died on a signal; php-fpm's log line, the signal and the worker's pid are in the evidence, and the hint is the signal's own (SIGSEGV, SIGABRT, SIGBUS, SIGILL, SIGFPE, SIGKILL)",
		Fix:     "SIGSEGV/SIGBUS/SIGILL: an extension or opcache (get a core dump); SIGABRT: a failed assertion in an extension or library; SIGKILL not from the OOM killer: an operator or a supervisor"}
	CauseOOMKilled = &Cause{ID: "worker_oom_killed", Status: 502,
		Title:   "The kernel's OOM killer killed the php-fpm worker",
		Meaning: "the worker died on SIGKILL and the oom_kill counter of php-fpm's memory cgroup went up (or the kernel log names the pid); the detail gives the memory limit and peak",
		Fix:     "keep `pm.max_children` × the memory one worker takes below the limit: fewer workers, a lower `memory_limit`, or a higher container memory limit"}
	CauseClientNotAllowed = &Cause{ID: "upstream_client_not_allowed", Status: 502,
		Title:   "php-fpm drops connections from fcgiscope's address",
		Meaning: "the pool's `listen.allowed_clients` does not list the address fcgiscope connects from, so php-fpm accepts and closes every connection at once (\"Connection disallowed\" with `catch_workers_output`)",
		Fix:     "add the address the detail names to `listen.allowed_clients`, or remove the setting"}
	CauseWorkerDied = &Cause{ID: "worker_died", Status: 502,
		Title:   "The php-fpm worker closed the connection mid-request",
		Meaning: "the connection closed before END_REQUEST and nothing tells why",
		Fix:     "give fcgiscope the pool config and error log"}
	CauseReadTimeout = &Cause{ID: "upstream_read_timeout", Status: 504,
		Title:   "php-fpm sent nothing within the read timeout",
		Meaning: "php-fpm sent nothing for `FCGISCOPE_READ_TIMEOUT`",
		Fix:     "faster scripts or a longer timeout"}
	CauseQueueTimeout = &Cause{ID: "queue_timeout", Status: 503,
		Title:   "No php-fpm worker became free in time",
		Meaning: "no upstream slot (`FCGISCOPE_MAX_CONNS`) became free within `FCGISCOPE_QUEUE_TIMEOUT`; php-fpm's status page says what kept the workers busy",
		Fix:     "faster scripts, more workers, a longer queue timeout"}
	CauseWebServerTimeout = &Cause{ID: "web_server_timeout", Status: 504, LogOnly: true,
		Title:   "nginx gave up on the request first",
		Meaning: "nginx's `fastcgi_read_timeout` (or `fastcgi_send_timeout` while sending the body) ran out and nginx answered 504 itself; the log line says what PHP did meanwhile",
		Fix:     "make the script faster, add workers, or raise nginx's timeout together with `request_terminate_timeout`"}
	CauseClientAborted = &Cause{ID: "client_aborted", Status: 499, LogOnly: true,
		Title:   "The client went away before the response was complete",
		Meaning: "nginx closed the connection first (client gone, `fastcgi_read_timeout`)",
		Fix:     "—"}
	CauseRequestTooLarge = &Cause{ID: "request_too_large", Status: 431,
		Title:   "The request's FastCGI params are too large",
		Meaning: "nginx sent more params than `FCGISCOPE_MAX_PARAMS_BYTES`",
		Fix:     "find the oversized header"}
	CauseDownstreamInvalid = &Cause{ID: "downstream_protocol_error", Status: 400, LogOnly: true,
		Title:   "The web server sent malformed FastCGI",
		Meaning: "the web server sent malformed FastCGI",
		Fix:     "—"}
	CauseShutdown = &Cause{ID: "shutdown_aborted", Status: 503, LogOnly: true,
		Title:   "fcgiscope stopped before the request finished",
		Meaning: "fcgiscope's shutdown timeout cut the request",
		Fix:     "a longer `FCGISCOPE_SHUTDOWN_TIMEOUT`"}
	CauseUnexplained = &Cause{ID: "unexplained", Status: 502,
		Title:   "The request failed in a way fcgiscope has no explanation for",
		Meaning: "a failure no rule explains; the raw error is the evidence",
		Fix:     "read the error in the evidence; report it to fcgiscope's developers, so that it gets a cause of its own"}

	// Responses php-fpm completed that tell of a problem: passed through
	// unchanged, named in the log.
	CauseScriptNotFound = &Cause{ID: "script_not_found", Status: 404, LogOnly: true,
		Title:   "php-fpm could not find the script",
		Meaning: "php-fpm answered 404 \"File not found.\" (Primary script unknown); the detail says which part of `SCRIPT_FILENAME` php-fpm lacks: the whole document root (nginx and php-fpm on different file systems), the file, a directory its user may not enter, or `open_basedir`",
		Fix:     "make `SCRIPT_FILENAME` name the file as php-fpm sees it"}
	CauseScriptDenied = &Cause{ID: "script_access_denied", Status: 403, LogOnly: true,
		Title:   "php-fpm refused to run the script",
		Meaning: "php-fpm refused the script: `security.limit_extensions`, or it may not read it",
		Fix:     "send only .php files to php-fpm, or give the pool's user read access"}
	CausePHPFatal = &Cause{ID: "php_fatal_error", Status: 500, LogOnly: true,
		Title:   "The script stopped with a PHP fatal error",
		Meaning: "the script stopped with a fatal error",
		Fix:     "fix the error at the file and line it names"}
	CauseMemory = &Cause{ID: "memory_exhausted", Status: 500, LogOnly: true,
		Title:   "The script ran out of memory (memory_limit)",
		Meaning: "the script hit `memory_limit`",
		Fix:     "load less into memory, or raise `memory_limit` for the script"}
	CauseBodyDiscarded = &Cause{ID: "request_body_discarded", Status: 200, LogOnly: true,
		Title:   "PHP threw the request body away",
		Meaning: "the body was larger than `post_max_size` (PHP ran the script with empty `$_POST` and `$_FILES`), or had more fields than `max_input_vars` (PHP dropped the rest); the response keeps the status the script gave",
		Fix:     "raise the setting where the detail says it is set, with nginx's `client_max_body_size` in step"}
	CauseUploadTooLarge = &Cause{ID: "upload_too_large", Status: 200, LogOnly: true,
		Title:   "The upload is larger than upload_max_filesize",
		Meaning: "a multipart body larger than `upload_max_filesize`: PHP tells only the script (`UPLOAD_ERR_INI_SIZE`) and logs nothing, so fcgiscope says what the sizes imply",
		Fix:     "raise `upload_max_filesize`, `post_max_size` above it, and nginx's `client_max_body_size`"}
	CauseDiskFull = &Cause{ID: "disk_full", Status: 200, LogOnly: true,
		Title:   "PHP could not write: a file system is full",
		Meaning: "PHP logged a write that failed with ENOSPC (sessions, uploads' temporary files, `file_put_contents`, opcache's file cache); the detail names the directory and, when fcgiscope can see it, its free and total space",
		Fix:     "free space or enlarge the file system; clean old sessions"}
	CauseSlowRequest = &Cause{ID: "slow_request", Status: 200, LogOnly: true,
		Title:   "php-fpm's slowlog caught the request",
		Meaning: "the response completed, but took longer than `request_slowlog_timeout`; the evidence carries the stack php-fpm took (function, file:line per frame)",
		Fix:     "make the code at the top of the stack faster"}
)

// Causes lists the catalogue in a stable order: failures first, then the
// responses php-fpm completed with a problem.
var Causes = []*Cause{
	CauseRefused, CauseSocketMissing, CauseSocketStale, CausePermissionDenied,
	CauseBacklogFull, CauseConnectTimeout, CauseDNSFailed, CauseNotFastCGI,
	CauseProtocolError, CauseHeadTooBig, CauseInvalidHeader, CauseOverloaded, CauseClientNotAllowed, CauseRejectedRequest,
	CauseWorkerTimeout, CauseOOMKilled, CauseWorkerCrashed, CauseWorkerDied, CauseReadTimeout, CauseQueueTimeout, CauseWebServerTimeout, CauseClientAborted,
	CauseRequestTooLarge, CauseDownstreamInvalid, CauseShutdown, CauseUnexplained,
	CauseScriptNotFound, CauseScriptDenied, CausePHPFatal, CauseMemory,
	CauseBodyDiscarded, CauseUploadTooLarge, CauseDiskFull, CauseSlowRequest,
}
