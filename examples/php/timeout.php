<?php
// Sleeps longer than the demo pool's request_terminate_timeout (5s), so
// php-fpm kills the worker mid-request.
header('Content-Type: text/plain');
sleep(10);
echo "not reached\n";
