<?php
// Kills the worker serving this request with ?sig=N (default 11, SIGSEGV; 9
// is SIGKILL), so that tests see a FastCGI connection closed mid-request.
// With ?flush=1 "partial\n" is sent first, with X-Accel-Buffering: no so
// that nginx forwards it before the worker dies.
$sig = isset($_GET['sig']) ? (int)$_GET['sig'] : 11;
if ($sig < 1 || $sig > 64) {
    http_response_code(400);
    echo "sig must be between 1 and 64\n";
    exit;
}
if (!function_exists('posix_kill')) {
    http_response_code(500);
    echo "the posix extension is not available\n";
    exit;
}
if (!empty($_GET['flush'])) {
    // Without this nginx (fastcgi_buffering on) holds "partial" until the end.
    // ?stream=0 leaves it out: the response is then an ordinary one whose
    // start a relay may hold back.
    if (($_GET['stream'] ?? '1') !== '0') {
        header('X-Accel-Buffering: no');
    }
    while (ob_get_level() > 0) {
        ob_end_flush();
    }
    echo "partial\n";
    flush();
}
posix_kill(getmypid(), $sig);
// A signal the worker ignores or handles lets the script continue.
echo "survived signal $sig\n";
