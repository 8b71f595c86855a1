package diagnostics

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
)

// BenchmarkDiagnoseGoodRequest measures what explaining a request that
// went well costs, the case of nearly every request: with nothing to read,
// and while following php-fpm's log and PHP's error log. Each request here
// ends just before it is explained, with none explained in between: the
// worst case, an fstat of each log; under load one look serves the
// requests that ended before it.
func BenchmarkDiagnoseGoodRequest(b *testing.B) {
	tr := workerDeath(5 * time.Millisecond)
	tr.Err, tr.Status, tr.Method, tr.ContentLength = nil, 200, "POST", 1000
	b.Run("plain", func(b *testing.B) {
		c := &Classifier{Pool: &fpm.Pool{Name: "www"}}
		b.ReportAllocs()
		for b.Loop() {
			if c.Diagnose(tr) != nil {
				b.Fatal("a good request was diagnosed")
			}
		}
	})
	b.Run("following logs", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		dir := b.TempDir()
		fpmLog := &fpm.Follower{Path: filepath.Join(dir, "php-fpm.log")}
		phpLog := &fpm.MessageLog{Path: filepath.Join(dir, "php-errors.log")}
		for _, p := range []string{fpmLog.Path, phpLog.Path} {
			os.WriteFile(p, []byte("x\n"), 0o644)
		}
		go fpmLog.Run(ctx)
		go phpLog.Run(ctx)
		<-fpmLog.Ready()
		c := &Classifier{Pool: &fpm.Pool{Name: "www"}, Log: fpmLog, PHPLog: phpLog}
		b.ReportAllocs()
		for b.Loop() {
			tr.End = time.Now()
			if c.Diagnose(tr) != nil {
				b.Fatal("a good request was diagnosed")
			}
		}
	})
}
