<?php
// Prints only the sha256 hex (no newline) of what big.php sends for the same
// ?mb=N, without sending the content itself.
require __DIR__ . '/bigcontent.inc.php';

header('Content-Type: text/plain');
$ctx = hash_init('sha256');
foreach (big_chunks(big_mebibytes()) as $chunk) {
    hash_update($ctx, $chunk);
}
echo hash_final($ctx);
