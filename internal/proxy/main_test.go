package proxy

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when any goroutine outlives them: a
// relay that leaks one per connection or per request would fill a
// long-running sidecar.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
