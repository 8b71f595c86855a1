<?php
// Allocates ?mb=N megabytes (default 256) and touches them, for tests of a
// worker the kernel's OOM killer takes; the pool must lift memory_limit.
$mb = isset($_GET['mb']) ? max(1, (int)$_GET['mb']) : 256;
$chunks = [];
for ($i = 0; $i < $mb; $i++) {
    $chunks[] = str_repeat(chr(65 + $i % 26), 1 << 20);
}
echo "allocated $mb MB\n";
