<?php
// The demo's front page: one link per failure fcgiscope explains, with what
// to expect. It is also the front controller: with `fcgiscope http`
// (--try-files, the default) or nginx's `try_files $uri $uri/ /index.php`,
// every path that is not a file lands here with its REQUEST_URI intact.
header('Content-Type: text/html; charset=utf-8');
$uri = $_SERVER['REQUEST_URI'] ?? '/';
$path = parse_url($uri, PHP_URL_PATH);
$routed = $path !== '/' && $path !== '/index.php';
$pages = [
    'hello.php' => 'a healthy page: 200, one info log line with the timings',
    'slow.php?s=2' => 'takes 2 seconds: the log line shows the time went to PHP (ttfb_ms); past request_slowlog_timeout php-fpm writes the script\'s stack to its slowlog',
    'timeout.php' => 'runs past request_terminate_timeout (5 s with make demo, 30 s with fcgiscope http --fpm auto): php-fpm kills the worker, you get a 502 worker_timeout_killed page naming the setting and where it is set',
    'segfault.php' => 'the worker dies on SIGSEGV before answering: a 502 worker_crashed page with php-fpm\'s log line and the worker\'s pid',
    'killed.php' => 'the worker sends part of the page, then dies on SIGKILL (what the OOM killer does): the transfer is cut off instead of ending as a truncated 200, and the log line says truncated: true',
    'killed.php?stream=0' => 'the same death while fcgiscope still holds the start of the response back: you get the 502 worker_crashed page instead',
    'memory.php' => 'exhausts memory_limit: php-fpm answers 500 itself; the log line names memory_exhausted and the line of PHP',
    'fatal.php' => 'calls an undefined function: 500, the log line names php_fatal_error with the file and line',
    'bigheader.php' => 'sends a 10 KiB cookie: nginx with its default fastcgi_buffer_size answers 502 ("upstream sent too big header"); fcgiscope http and nginx with fastcgi_buffer_size 32k serve it',
    'upload.php' => 'reads the request body slowly (64 KiB/s): a large upload outlives request_terminate_timeout, and the log shows how far the body got (bytes_in, phase)',
    'missing.php' => 'a script that does not exist: php-fpm answers 404 "File not found."; the log names script_not_found',
    'any/route?x=1' => 'not a file: the front controller (this page) answers, with the original REQUEST_URI',
];
?>
<!doctype html>
<title>fcgiscope demo</title>
<style>body { font: 16px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem } code { background: #f3f3f3; padding: 0 .2em }</style>
<h1>fcgiscope demo</h1>
<?php if ($routed): ?>
<p><strong>Routed here by the front controller:</strong> you asked for <code><?= htmlspecialchars($uri) ?></code>,
which is not a file, so it went to <code><?= htmlspecialchars($_SERVER['SCRIPT_NAME'] ?? '') ?></code> with
<code>REQUEST_URI</code> intact, as nginx's <code>try_files $uri $uri/ /index.php?$query_string</code> does.</p>
<?php endif; ?>
<p>PHP requests go through fcgiscope to php-fpm. Each link below fails in one of the ways fcgiscope
explains. Watch fcgiscope's terminal: one line per request. Ask for JSON
(<code>curl -H 'Accept: application/json' URL</code>) to get the same explanation as <code>application/problem+json</code>.</p>
<ul>
<?php foreach ($pages as $href => $what): ?>
  <li><a href="<?= htmlspecialchars($href) ?>"><?= htmlspecialchars($href) ?></a> — <?= htmlspecialchars($what) ?></li>
<?php endforeach; ?>
</ul>
