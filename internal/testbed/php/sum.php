<?php
// Sends ?kb=N KiB (default 64) of random text in flushed chunks, then a last
// line "sha256=HEX" over everything before it, so that a client can tell a
// complete body from a cut or mixed-up one. ?ms=M sleeps M milliseconds
// between chunks, giving deaths time to land mid-response.
$kb = isset($_GET['kb']) ? max(0, (int)$_GET['kb']) : 64;
$ms = isset($_GET['ms']) ? max(0, (int)$_GET['ms']) : 0;
header('Content-Type: text/plain');
while (ob_get_level() > 0) {
    ob_end_flush();
}
$ctx = hash_init('sha256');
for ($i = 0; $i < $kb; $i++) {
    $chunk = bin2hex(random_bytes(511)) . "\n\n";
    hash_update($ctx, $chunk);
    echo $chunk;
    flush();
    if ($ms > 0) {
        usleep($ms * 1000);
    }
}
echo "sha256=" . hash_final($ctx) . "\n";
