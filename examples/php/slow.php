<?php
// Sleeps ?s= seconds (default 2, at most 30).
$s = min(30, max(0, (float)($_GET['s'] ?? 2)));
usleep((int)($s * 1e6));
echo "slept {$s}s\n";
