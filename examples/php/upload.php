<?php
// Reads the request body at ?rate= KiB/s (default 64), like a script that
// processes an upload as it arrives. A 3 MiB upload takes 48 s: past the
// request_terminate_timeout of 30 s of `fcgiscope http --fpm auto`.
//
//   head -c 3M /dev/urandom | curl -T - http://127.0.0.1:8080/upload.php
//
// (with -T - curl sends the body chunked; fcgiscope http and nginx read it
// whole first, since php-fpm needs CONTENT_LENGTH.)
if ($_SERVER['REQUEST_METHOD'] === 'GET') {
    header('Content-Type: text/html; charset=utf-8');
    echo '<!doctype html><title>slow upload</title><h1>Slow upload</h1>',
        '<form method="post" enctype="application/octet-stream" action="upload.php">',
        '<textarea name="body" rows="6" cols="60">type or paste something large</textarea><br>',
        '<button>Upload at 64 KiB/s</button></form>';
    exit;
}
header('Content-Type: text/plain');
$rate = max(1, (int)($_GET['rate'] ?? 64)) * 1024;
$in = fopen('php://input', 'rb');
$ctx = hash_init('sha256');
$len = 0;
$start = microtime(true);
while (!feof($in)) {
    $chunk = fread($in, 8192);
    if ($chunk === false || $chunk === '') {
        break;
    }
    $len += strlen($chunk);
    hash_update($ctx, $chunk);
    // Sleep so that the average stays at $rate bytes per second.
    $ahead = $len / $rate - (microtime(true) - $start);
    if ($ahead > 0) {
        usleep((int)($ahead * 1e6));
    }
}
printf("read %d bytes in %.1f s, sha256 %s\n", $len, microtime(true) - $start, hash_final($ctx));
