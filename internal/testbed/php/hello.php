<?php
// Prints a fixed line so tests can compare the body exactly.
echo "hello from php\n";
