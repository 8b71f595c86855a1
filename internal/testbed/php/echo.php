<?php
// Reports the length and sha256 of the request body. The body is hashed in
// chunks so that bodies larger than memory_limit work too.
$in = fopen('php://input', 'rb');
$ctx = hash_init('sha256');
$len = 0;
while (!feof($in)) {
    $chunk = fread($in, 65536);
    if ($chunk === false || $chunk === '') {
        break;
    }
    $len += strlen($chunk);
    hash_update($ctx, $chunk);
}
fclose($in);
printf("len=%d sha256=%s\n", $len, hash_final($ctx));
