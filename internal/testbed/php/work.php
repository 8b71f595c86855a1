<?php
// Does about 2 ms of CPU work, then prints "work done\n": a stand-in for a
// script whose time goes to PHP rather than to moving bytes, so that the
// benchmarks can show what a relay adds when php-fpm, not the path to it,
// is the bottleneck.
//
// The work is a fixed number of iterations (md5 of the previous hash and a
// 1 KiB block), not a loop until 2 ms have passed: under CPU contention a
// timed loop would do less work per request, and the configurations that
// take more CPU elsewhere would look cheaper in php-fpm.
//
// Calibrated on the 2-CPU benchmark machine with PHP 8.2.36: with the php8.2
// CLI one iteration takes 1.75 to 1.9 µs of CPU, 1000 of them 1.86 ms
// (median of 41 runs); through php-fpm (1000 sequential requests via nginx,
// php-fpm's CPU time measured as the benchmarks do) a request of this
// script takes 1.96 to 2.09 ms of CPU, where hello.php takes 0.07 to 0.1 ms.
const WORK_ITERATIONS = 1000;

$block = str_repeat('0123456789abcdef', 64);
$h = '';
for ($i = 0; $i < WORK_ITERATIONS; $i++) {
    $h = md5($h . $block);
}
header('Content-Type: text/plain');
echo "work done\n";
