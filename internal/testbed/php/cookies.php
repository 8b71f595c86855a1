<?php
// Exercises repeated and custom response headers and a non-200 status.
http_response_code(201);
setcookie('a', '1');
setcookie('b', '2');
setcookie('c', '3');
header('X-Custom: yes');
echo "cookies\n";
