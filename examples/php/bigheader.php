<?php
// Sends a 10 KiB cookie. nginx keeps the response headers in one
// fastcgi_buffer_size buffer (4 or 8 KiB by default) and answers 502 with
// "upstream sent too big header while reading response header from
// upstream" in its error log; raise fastcgi_buffer_size to 32k to serve it.
setcookie('big', str_repeat('x', 10 * 1024));
header('Content-Type: text/plain');
echo "10 KiB cookie sent\n";
