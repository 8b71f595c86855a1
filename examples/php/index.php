<?php
// The demo's front page: links to pages that work and pages that fail, so
// that fcgiscope's log shows both.
header('Content-Type: text/html; charset=utf-8');
$pages = [
    'hello.php' => 'a healthy page',
    'slow.php?s=2' => 'takes 2 seconds; the log line shows where the time went',
    'timeout.php' => 'runs past request_terminate_timeout (5s); php-fpm kills the worker',
    'missing.php' => 'a script that does not exist: php-fpm answers 404 "File not found."',
];
?>
<!doctype html>
<title>fcgiscope demo</title>
<h1>fcgiscope demo</h1>
<p>nginx on this port sends PHP requests to fcgiscope, which relays them to php-fpm.
Watch fcgiscope's terminal: one line per request.</p>
<ul>
<?php foreach ($pages as $href => $what): ?>
  <li><a href="<?= htmlspecialchars($href) ?>"><?= htmlspecialchars($href) ?></a> — <?= htmlspecialchars($what) ?></li>
<?php endforeach; ?>
</ul>
