// Package e2e holds the end-to-end tests that run real nginx and php-fpm
// with fcgiscope between them. It has no code of its own.
package e2e
