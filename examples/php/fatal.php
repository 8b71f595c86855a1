<?php
// Calls a function that does not exist: "PHP Fatal error: Uncaught Error:
// Call to undefined function", status 500.
header('Content-Type: text/plain');
echo "about to fail\n";
fcgiscope_demo_undefined_function();
