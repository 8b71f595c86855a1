// Package examples holds no code: the directory has the demo's PHP pages
// and configurations for nginx, php-fpm, Kubernetes and systemd. Its tests
// decode the Kubernetes manifests and docker-compose.yml strictly, check
// that every file names the same sockets, paths and settings, run the
// configurations through nginx -t, php-fpm and systemd-analyze where those
// are installed, and check that each demo page fails the way its index says.
package examples
