<?php
// Exhausts PHP's memory_limit (set to 16M here): PHP stops with "Allowed
// memory size of 16777216 bytes exhausted" and php-fpm answers 500 itself.
ini_set('memory_limit', '16M');
$hog = [];
while (true) {
    $hog[] = str_repeat('x', 1 << 20);
}
