# The targets the README and CI use.
GO ?= go

.PHONY: test vet build deps demo bench fuzz soak

# Everything CI checks: formatting, vet, and every test with the race
# detector. Integration tests need nginx and php-fpm (make deps installs them).
test: vet
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	@# Jaeger, the tracing tests' backend, takes minutes to build the first
	@# time: built here, before the tests that time things run beside it.
	$(GO) test -count=1 -timeout 30m -run '^TestJaeger$$' ./internal/testbed/
	$(GO) test -race -count=1 ./...
	cd tools/promcheck && $(GO) test -count=1 ./...

vet:
	$(GO) vet ./...

build:
	$(GO) build -o bin/fcgiscope ./cmd/fcgiscope

# Installs the Debian packages the integration tests and the demo run,
# without starting their system services.
deps:
	./scripts/install-deps

# Runs php-fpm on a unix socket with fcgiscope in front of it on 127.0.0.1:9001.
demo: build
	./scripts/demo

# Measures fcgiscope against nginx -> php-fpm directly and through a bare
# byte relay, under wrk's closed loop and at a fixed open-loop rate, and the
# relay's Go benchmarks. Prints ratio tables; raw numbers go to
# bench-results/. Tune with BENCH_ROUNDS, BENCH_DURATION, BENCH_CONNS,
# BENCH_ONLY, BENCH_SCRIPTS and BENCH_LOAD_FRACTION; BENCH_BASELINE_BIN adds
# another fcgiscope binary to compare with (see benchmarks/doc.go).
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/fcgi/ ./internal/proxy/ ./internal/cgi/
	FCGISCOPE_BENCH=1 $(GO) test -count=1 -timeout 60m -run 'TestNginxLoadRatios|TestOpenLoopLatency|TestFastCGILoadRatios|TestIdleKeptAlive|TestStreamingOneGiB' -v ./benchmarks/ | grep -v -e '^    suite_test.go' -e '^    openloop_test.go'

# Runs every fuzz target for FUZZTIME (default 10s) each.
fuzz:
	./scripts/fuzz

# The chaos soak for SOAK_DURATION (default 2m) and at least SOAK_REQUESTS
# requests (default 100000): traffic through real nginx, fcgiscope and
# php-fpm while workers are killed, php-fpm reloads and restarts, and
# clients give up. `make test` runs an 8 s version of it.
SOAK_DURATION ?= 2m
SOAK_REQUESTS ?= 100000
soak:
	SOAK_DURATION=$(SOAK_DURATION) SOAK_REQUESTS=$(SOAK_REQUESTS) $(GO) test -count=1 -timeout 60m -run TestChaosSoak -v ./e2e/ | grep -E '^soak|--- |^ok|FAIL'
