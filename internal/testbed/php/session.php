<?php
// Starts a session and stores ?kb=N kilobytes in it (default 64), so that
// PHP writes a session file of that size when the script ends.
$kb = isset($_GET['kb']) ? max(0, (int)$_GET['kb']) : 64;
session_start();
$_SESSION['payload'] = str_repeat('x', $kb * 1024);
echo "stored $kb KB\n";
