package diagnostics

// Cause is one entry of the cause catalogue: every failed request gets
// exactly one, and its ID is what the page, the X-Fcgiscope-Cause header,
// the log line and the metrics all say.
type Cause struct {
	// ID is stable; people grep for it and alert on it.
	ID string
	// Status is the HTTP status of the replacement response. Causes that
	// are only logged carry the status the log line reports.
	Status int
	// Title is the one-line headline.
	Title string
	// LogOnly causes never replace a response: the client already has
	// one, or nobody is left to send one to.
	LogOnly bool
}

// The catalogue. Adding a cause is one entry here and a case in classify.
var (
	CauseRefused           = &Cause{ID: "upstream_refused", Status: 502, Title: "Nothing is listening at the php-fpm address"}
	CauseSocketMissing     = &Cause{ID: "upstream_socket_missing", Status: 502, Title: "The php-fpm socket file does not exist"}
	CauseSocketStale       = &Cause{ID: "upstream_socket_stale", Status: 502, Title: "The php-fpm socket exists but nobody accepts on it"}
	CausePermissionDenied  = &Cause{ID: "upstream_permission_denied", Status: 502, Title: "Not allowed to connect to the php-fpm socket"}
	CauseBacklogFull       = &Cause{ID: "upstream_backlog_full", Status: 503, Title: "php-fpm's listen queue is full"}
	CauseConnectTimeout    = &Cause{ID: "upstream_connect_timeout", Status: 504, Title: "php-fpm did not accept the connection in time"}
	CauseDNSFailed         = &Cause{ID: "upstream_dns_failed", Status: 502, Title: "The php-fpm host name does not resolve"}
	CauseNotFastCGI        = &Cause{ID: "upstream_not_fastcgi", Status: 502, Title: "The upstream does not speak FastCGI"}
	CauseProtocolError     = &Cause{ID: "upstream_protocol_error", Status: 502, Title: "The upstream sent malformed FastCGI"}
	CauseOverloaded        = &Cause{ID: "upstream_overloaded", Status: 503, Title: "php-fpm refused the request as overloaded"}
	CauseWorkerTimeout     = &Cause{ID: "worker_timeout_killed", Status: 502, Title: "php-fpm killed the worker: request_terminate_timeout"}
	CauseWorkerCrashed     = &Cause{ID: "worker_crashed", Status: 502, Title: "The php-fpm worker crashed"}
	CauseWorkerDied        = &Cause{ID: "worker_died", Status: 502, Title: "The php-fpm worker closed the connection mid-request"}
	CauseReadTimeout       = &Cause{ID: "upstream_read_timeout", Status: 504, Title: "php-fpm sent nothing within the read timeout"}
	CauseQueueTimeout      = &Cause{ID: "queue_timeout", Status: 503, Title: "No php-fpm worker became free in time"}
	CauseClientAborted     = &Cause{ID: "client_aborted", Status: 499, Title: "The client went away before the response was complete", LogOnly: true}
	CauseRequestTooLarge   = &Cause{ID: "request_too_large", Status: 431, Title: "The request's FastCGI params are too large"}
	CauseDownstreamInvalid = &Cause{ID: "downstream_protocol_error", Status: 400, Title: "The web server sent malformed FastCGI", LogOnly: true}
	CauseShutdown          = &Cause{ID: "shutdown_aborted", Status: 503, Title: "fcgiscope stopped before the request finished", LogOnly: true}

	// Responses php-fpm completed that tell of a problem: passed through
	// unchanged, named in the log.
	CauseScriptNotFound = &Cause{ID: "script_not_found", Status: 404, Title: "php-fpm could not find the script", LogOnly: true}
	CauseScriptDenied   = &Cause{ID: "script_access_denied", Status: 403, Title: "php-fpm refused to run the script", LogOnly: true}
	CausePHPFatal       = &Cause{ID: "php_fatal_error", Status: 500, Title: "The script stopped with a PHP fatal error", LogOnly: true}
	CauseMemory         = &Cause{ID: "memory_exhausted", Status: 500, Title: "The script ran out of memory (memory_limit)", LogOnly: true}
)

// Causes lists the catalogue in a stable order.
var Causes = []*Cause{
	CauseRefused, CauseSocketMissing, CauseSocketStale, CausePermissionDenied,
	CauseBacklogFull, CauseConnectTimeout, CauseDNSFailed, CauseNotFastCGI,
	CauseProtocolError, CauseOverloaded, CauseWorkerTimeout, CauseWorkerCrashed,
	CauseWorkerDied, CauseReadTimeout, CauseQueueTimeout, CauseClientAborted,
	CauseRequestTooLarge, CauseDownstreamInvalid, CauseShutdown,
	CauseScriptNotFound, CauseScriptDenied, CausePHPFatal, CauseMemory,
}
