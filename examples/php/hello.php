<?php
echo "hello from php-fpm, through fcgiscope\n";
