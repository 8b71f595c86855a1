# The targets the README and CI use.
GO ?= go

.PHONY: test vet build deps demo

# Everything CI checks: formatting, vet, and every test with the race
# detector. Integration tests need nginx and php-fpm (make deps installs them).
test: vet
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) test -race -count=1 ./...

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
