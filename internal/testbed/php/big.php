<?php
// Streams ?mb=N MiB (default 20) of deterministic content; sha.php prints its
// sha256. Output buffering (4096 in Debian's php.ini) is ended so that the
// body is streamed instead of collected.
require __DIR__ . '/bigcontent.inc.php';

header('Content-Type: application/octet-stream');
while (ob_get_level() > 0) {
    ob_end_flush();
}
foreach (big_chunks(big_mebibytes()) as $chunk) {
    echo $chunk;
    flush();
}
