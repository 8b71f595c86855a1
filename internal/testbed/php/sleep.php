<?php
// Sleeps ?s=F seconds (default 1). With ?flush=1 it first sends "started\n"
// so that tests can observe a response that has begun but not finished; it
// also sends X-Accel-Buffering: no so that nginx forwards it at once.
$seconds = isset($_GET['s']) ? max(0.0, (float)$_GET['s']) : 1.0;
if (!empty($_GET['flush'])) {
    // Without this nginx (fastcgi_buffering on) holds "started" until the end.
    // ?stream=0 leaves it out: the response is then an ordinary one whose
    // start a relay may hold back.
    if (($_GET['stream'] ?? '1') !== '0') {
        header('X-Accel-Buffering: no');
    }
    while (ob_get_level() > 0) {
        ob_end_flush();
    }
    echo "started\n";
    flush();
}
// usleep returns early when a signal arrives (php-fpm sends SIGQUIT to its
// workers on a graceful stop), so sleep until the deadline to behave like a
// request that is really busy.
$deadline = microtime(true) + $seconds;
while (($left = $deadline - microtime(true)) > 0) {
    usleep((int)ceil($left * 1e6));
}
echo "slept\n";
