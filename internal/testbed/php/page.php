<?php
// A stand-in for a real application's page: 52,335 bytes (51.1 KiB) of HTML
// whose first line is "<!doctype html>", sent in 13 pieces of 4 KiB (the
// last one shorter) with flush() after each, as PHP sends a page with
// output_buffering = 4096, and with a little work (some 0.1 ms of CPU)
// before each piece, as a template renders between them. The benchmarks use
// it to show the cost of relaying a response of many FastCGI records rather
// than of one small one. The output is the same on every request.
//
// Output buffering is ended first, so that the pieces are exactly the
// 4096-byte ones below whatever php.ini says.
const PIECE_SIZE = 4096;
// PIECE_WORK iterations of work.php's md5 step take about 0.1 ms of CPU
// (1.7 to 1.9 µs each with the php8.2 CLI on the benchmark machine); a
// whole request of this script took 1.5 ms of php-fpm's CPU there.
const PIECE_WORK = 50;
const ROWS = 410;

header('Content-Type: text/html; charset=utf-8');
while (ob_get_level() > 0) {
    ob_end_clean();
}

$html = "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Catalogue</title>\n"
    . "<style>body{font-family:sans-serif}table{border-collapse:collapse}td{padding:2px 8px}tr.odd{background:#eee}</style>\n"
    . "</head>\n<body>\n<nav><a href=\"/\">Home</a> | <a href=\"/products\">Products</a> | <a href=\"/about\">About</a></nav>\n"
    . "<h1>Catalogue</h1>\n<table>\n<thead><tr><th>#</th><th>Product</th><th>Price</th><th>Stock</th></tr></thead>\n<tbody>\n";
for ($k = 1; $k <= ROWS; $k++) {
    $html .= sprintf(
        "<tr class=\"%s\"><td>%05d</td><td><a href=\"/products/%05d\">Product number %05d</a></td><td>%d.%02d</td><td>%s</td></tr>\n",
        $k % 2 ? 'odd' : 'even', $k, $k, $k, 3 + $k * 7 % 97, $k * 13 % 100, $k % 5 ? 'in stock' : 'sold out'
    );
}
$html .= "</tbody>\n</table>\n<footer>fcgiscope testbed</footer>\n</body>\n</html>\n";

$block = str_repeat('0123456789abcdef', 64);
$h = '';
foreach (str_split($html, PIECE_SIZE) as $piece) {
    for ($i = 0; $i < PIECE_WORK; $i++) {
        $h = md5($h . $block);
    }
    echo $piece;
    flush();
}
