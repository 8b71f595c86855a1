// Package jaeger holds no code: its module pins Jaeger
// (github.com/jaegertracing/jaeger/cmd/jaeger, the OpenTelemetry collector
// based "Jaeger v2") as a tool, for the end-to-end tests of fcgiscope's
// traces. It is a module of its own so that Jaeger's hundreds of
// dependencies stay out of fcgiscope's go.mod.
//
// internal/testbed (RequireJaeger, StartJaeger) builds the binary from here
// with `go build github.com/jaegertracing/jaeger/cmd/jaeger` and caches it
// under os.TempDir, keyed by this go.mod and go.sum; `go tool jaeger` in
// this directory runs it too. To move to another version:
//
//	go get -tool github.com/jaegertracing/jaeger/cmd/jaeger@vX.Y.Z && go mod tidy
package jaeger
