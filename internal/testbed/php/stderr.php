<?php
// php://stderr is the worker's own stderr: php-fpm discards it unless
// catch_workers_output = yes, in which case it appears in the php-fpm error
// log. error_log() (with PHP's error_log unset, as on Debian) is sent over
// FastCGI stderr instead, which nginx logs as "FastCGI sent in stderr".
file_put_contents('php://stderr', "this goes to stderr\n");
error_log('this goes to fastcgi stderr');
echo "stderr ok\n";
