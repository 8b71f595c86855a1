package benchmarks

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/bench"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// TestFastCGILoadRatios loads php-fpm with fcgiscope's own load generator,
// directly and through fcgiscope, alternating, without nginx in the way.
func TestFastCGILoadRatios(t *testing.T) {
	if os.Getenv("FCGISCOPE_BENCH") != "1" {
		t.Skip("benchmarks run with make bench (FCGISCOPE_BENCH=1)")
	}
	root := testbed.PHPRoot(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{MaxChildren: 4})
	dir := testbed.ShortTempDir(t)
	sock, kaSock := filepath.Join(dir, "fcgiscope.sock"), filepath.Join(dir, "keepalive.sock")
	testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN=unix:"+sock, "FCGISCOPE_UPSTREAM="+fpm.Addr,
		"FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath, "FCGISCOPE_LOG_LEVEL=warn")
	testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN=unix:"+kaSock, "FCGISCOPE_UPSTREAM="+fpm.Addr,
		"FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath, "FCGISCOPE_LOG_LEVEL=warn", "FCGISCOPE_UPSTREAM_KEEPALIVE=3")
	targets := []struct {
		name string
		addr fcgi.Addr
	}{
		{"direct", fcgi.Addr{Network: fpm.Network, Address: fpm.Address}},
		{"fcgiscope", fcgi.Addr{Network: "unix", Address: sock}},
		{"fcgiscope+keepalive", fcgi.Addr{Network: "unix", Address: kaSock}},
	}
	rps := map[string][]float64{}
	p99 := map[string][]float64{}
	for round := range rounds {
		for _, tg := range targets {
			res, err := bench.Run(context.Background(), bench.Config{
				Upstream: tg.addr, Script: filepath.Join(root, "hello.php"), Concurrency: conns,
				Duration: duration, Warmup: time.Second, ExpectBodyPrefix: "hello from php",
			})
			if err != nil {
				t.Fatal(err)
			}
			if n := res.ErrorCount(); n > 0 {
				t.Errorf("%s: %d failed requests: %v", tg.name, n, res.Errors)
			}
			rps[tg.name] = append(rps[tg.name], res.Throughput())
			p99[tg.name] = append(p99[tg.name], float64(res.Percentile(99).Microseconds())/1000)
			t.Logf("round %d %-20s %8.0f req/s p99 %.2f ms", round, tg.name, res.Throughput(), p99[tg.name][len(p99[tg.name])-1])
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "FastCGI straight to php-fpm vs through fcgiscope, hello.php, -c%d, %s, median of %d alternating rounds\n", conns, duration, rounds)
	fmt.Fprintf(&b, "%-20s %10s %8s %9s %8s\n", "target", "req/s", "±%", "p99 ms", "ratio")
	for _, tg := range targets {
		fmt.Fprintf(&b, "%-20s %10.0f %7.1f%% %9.3f %7.2fx\n", tg.name, median(rps[tg.name]), spread(rps[tg.name]), median(p99[tg.name]), median(rps[tg.name])/median(rps["direct"]))
	}
	fmt.Print(b.String())
	writeResults(t, "fastcgi", map[string]any{"rps": rps, "p99_ms": p99}, b.String())
}
