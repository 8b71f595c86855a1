<?php
// Sends the start of a page, then kills its worker with SIGKILL, as the
// kernel's OOM killer does. With X-Accel-Buffering: no the start is
// forwarded at once (by nginx and by fcgiscope), so the death comes after
// the client got part of the page; ?stream=0 leaves the header out, and
// fcgiscope still holds the start back (FCGISCOPE_HOLD_BYTES) when the worker
// dies, so it can answer with an explanation instead.
if (!function_exists('posix_kill')) {
    http_response_code(500);
    exit("the posix extension is missing: install php-posix (Debian: php8.2-common has it)\n");
}
header('Content-Type: text/html; charset=utf-8');
if (($_GET['stream'] ?? '1') !== '0') {
    header('X-Accel-Buffering: no');
}
while (ob_get_level() > 0) {
    ob_end_flush();
}
echo "<!doctype html><title>half a page</title><h1>This page will never finish</h1>\n";
for ($i = 1; $i <= 20; $i++) {
    echo "<p>row $i</p>\n";
}
flush();
usleep(200000);
posix_kill(getmypid(), 9); // SIGKILL; the constant needs pcntl, which php-fpm lacks
echo "<p>not reached</p>\n";
