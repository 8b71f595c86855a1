<?php
// Prints the request variables that tests check, as sorted KEY=value lines.
header('Content-Type: text/plain');
$keys = ['REQUEST_METHOD', 'SCRIPT_FILENAME', 'REQUEST_URI', 'QUERY_STRING', 'CONTENT_LENGTH'];
$out = [];
foreach ($_SERVER as $key => $value) {
    if (str_starts_with($key, 'HTTP_') || in_array($key, $keys, true)) {
        $out[$key] = $value;
    }
}
ksort($out, SORT_STRING);
foreach ($out as $key => $value) {
    echo $key, '=', $value, "\n";
}
