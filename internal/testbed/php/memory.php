<?php
// Causes "PHP Fatal error: Allowed memory size of 8388608 bytes exhausted".
ini_set('memory_limit', '8M');
$hog = [];
while (true) {
    $hog[] = str_repeat('x', 1 << 20);
}
