<?php
// Sleeps past the pool's request_terminate_timeout, so php-fpm kills the
// worker mid-request: 5 s in `make demo`, 30 s with `fcgiscope http --fpm
// auto`. ?s= sets the sleep (default 40 s, past both). sleep() is not CPU
// time, so PHP's own max_execution_time does not stop it first.
header('Content-Type: text/plain');
$s = min(300, max(0, (int)($_GET['s'] ?? 40)));
sleep($s);
echo "not reached: the pool's request_terminate_timeout is above {$s}s, or off\n";
