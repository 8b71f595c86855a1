// Package benchmarks holds the benchmark suite behind `make bench`: real nginx
// and php-fpm with fcgiscope, socat or nothing between them, measured in
// alternation so that the ratios mean something on a noisy machine. It has
// no code of its own; the suite is a test that runs only when
// FCGISCOPE_BENCH=1.
package benchmarks
