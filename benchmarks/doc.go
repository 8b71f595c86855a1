// Package benchmarks holds the benchmark suite behind `make bench`: real
// nginx and php-fpm with nothing, a bare byte relay or fcgiscope between
// them, measured in alternation so that the ratios mean something on a noisy
// machine. It has no code of its own besides the bare relay fixture in
// barerelay/, which the suite builds; the suite is a set of tests that run
// only when FCGISCOPE_BENCH=1:
//
//   - TestNginxLoadRatios loads each script of BENCH_SCRIPTS (default
//     hello.php; work.php, about 2 ms of PHP; and page.php, 52 KB written
//     in 4 KiB flushes as a real application's page is) through nginx with
//     wrk, over unix sockets and TCP, with fastcgi_keep_conn off and on,
//     with php-fpm reached directly, through the bare relay and through
//     fcgiscope with its defaults, with FCGISCOPE_UPSTREAM_KEEPALIVE=0 and
//     =3, and through the fcgiscope binary BENCH_BASELINE_BIN names, started
//     with the settings in BENCH_BASELINE_ENV, when it is set. It reports
//     throughput and latency against direct, the CPU time per request of
//     the relay, php-fpm and nginx, and the relay's CPU time as a multiple
//     of the bare relay's.
//   - TestOpenLoopLatency sends hello.php at a fixed rate,
//     BENCH_LOAD_FRACTION (default 0.5) of direct's saturation throughput,
//     to the same configurations but fcgiscope-ka3, and reports latency
//     percentiles counted from each request's scheduled send time, which a
//     closed-loop tool such as wrk cannot, with each hop's CPU time. The
//     generator shares the machine: on 2 cores, half of direct's
//     saturation is more than any relay in the path sustains, and the
//     table says so; 0.3 compares the paths.
//   - TestFastCGILoadRatios loads php-fpm with fcgiscope's own FastCGI load
//     generator, directly and through fcgiscope, without nginx.
//   - TestIdleKeptAliveConnectionsMemory and TestStreamingOneGiB measure
//     fcgiscope's memory per idle connection and its streaming throughput.
//
// BENCH_ROUNDS, BENCH_DURATION and BENCH_CONNS tune every run, and
// BENCH_ONLY, a regular expression such as "unix keep_conn=false", narrows
// the transports and keep_conn settings measured. Tables are printed, and
// the raw numbers written to bench-results/.
package benchmarks
