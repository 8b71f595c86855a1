<?php
// Writes ?n=N lines (default 50000) with error_log() before any output: each
// becomes a FastCGI stderr record before the response begins. Prints
// "flooded N\n".
$n = isset($_GET['n']) ? max(0, (int)$_GET['n']) : 50000;
for ($i = 0; $i < $n; $i++) {
    error_log("stderr flood line $i of $n, padded to look like a real warning from a busy script");
}
echo "flooded $n\n";
