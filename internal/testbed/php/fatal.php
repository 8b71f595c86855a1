<?php
// Causes "PHP Fatal error: Uncaught Error: Call to undefined function".
testbed_undefined_function();
