<?php
// Kills the worker serving this request with SIGSEGV, as a crashing
// extension does. php-fpm logs "child N exited on signal 11 (SIGSEGV)".
if (!function_exists('posix_kill')) {
    http_response_code(500);
    exit("the posix extension is missing: install php-posix (Debian: php8.2-common has it)\n");
}
posix_kill(getmypid(), 11); // SIGSEGV; the constant needs pcntl, which php-fpm lacks
echo "not reached\n";
