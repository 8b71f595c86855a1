// Package hostprobe finds the FastCGI responders of this host, so that fcgiscope
// can say "nothing listens on 127.0.0.1:9000; php-fpm answers on
// unix:/dev/shm/php-cgi.sock".
//
// Listening lists the candidate sockets from /proc; FindFastCGI probes them;
// Nearby lists the socket files near a path that does not exist.
//
// # The probe
//
// A candidate is probed with a FastCGI GET_VALUES management record asking
// for FCGI_MPXS_CONNS. It changes nothing on the server: it is not a request,
// runs no script and writes no access log line.
//
// Measured with php-fpm 8.2 (Debian bookworm, pm static, dynamic and ondemand,
// unix and TCP listeners): php-fpm answers at once (about 0.1 ms) with one
// GET_VALUES_RESULT record for request id 0 that holds only
// FCGI_MPXS_CONNS=0. Asked for FCGI_MAX_CONNS, FCGI_MAX_REQS and
// FCGI_MPXS_CONNS, it leaves out the first two, and a GET_VALUES asking only
// for those gets an empty GET_VALUES_RESULT: php-fpm knows no other variable.
// The probe asks for FCGI_MPXS_CONNS alone because older PHP versions loop
// on names they do not know (see probeNames).
//
// After answering, the php-fpm 8.2 worker keeps the connection open and waits
// for a request on it (older versions closed it; PHP bug #76922), so the probe
// closes the connection as soon as the answer is read: with
// pm.max_children = 1 a probe that held it open would block every other
// client. A pool whose workers are all busy answers nothing until a worker is
// free, so a saturated pool may be missed by a short probe.
//
// Because php-fpm answers GET_VALUES, that is the probe. For servers that do
// not, there are two fall-backs, both within the same per-probe timeout:
//
//   - A peer that closes the connection without sending a byte is asked again,
//     on a new connection, with a minimal RESPONDER request (see
//     probeParams): REQUEST_METHOD=GET and a SCRIPT_FILENAME that cannot
//     exist and ends in .php. php-fpm answers it with "Status: 404 Not Found",
//     "File not found." on STDOUT and "Primary script unknown" on STDERR and
//     runs no script; it writes nothing to its error log (the .php suffix
//     keeps security.limit_extensions from logging a warning), but a pool
//     with an access.log gets a "GET /fcgiscope-probe.php" 404 line.
//   - A peer that stays silent for half the timeout gets the same request on
//     the same connection, for servers that ignore management records and wait
//     for BEGIN_REQUEST (HHVM did). Its request id, 10, is a newline byte, so
//     that an HTTP server waiting for the end of a request line answers
//     "HTTP/1.1 400" and is recognised as one.
//
// Proof of a responder is the first record of the answer being well-formed
// FastCGI of the kind asked for: GET_VALUES_RESULT with valid name-value
// pairs, or UNKNOWN_TYPE naming GET_VALUES (a server that does not implement
// management records), both for request id 0; or STDOUT, STDERR or
// END_REQUEST for the probe's request. Anything else (an HTTP server's
// "HTTP/1.1 400", an SSH banner, a database greeting, a truncated record) is
// not a responder.
package hostprobe
