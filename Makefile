# ssemesh developer entry points. `make test` is the one command that runs
# every test on a fresh machine: it installs what the tests need first.
GO ?= go
export GOTOOLCHAIN ?= local

.PHONY: test deps demo build vet bench fuzz

test: deps vet
	$(GO) test -race -count=1 -timeout 20m ./...

deps:
	bash scripts/install-test-deps.sh

vet:
	@unformatted="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	  if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

demo:
	$(GO) run ./cmd/ssemesh demo

build:
	mkdir -p bin
	$(GO) build -o bin/ssemesh ./cmd/ssemesh
	$(GO) build -o bin/ssemesh-bench ./cmd/ssemesh-bench

fuzz:
	$(GO) test -run XXX -fuzz FuzzParser -fuzztime 60s ./internal/sse/
	$(GO) test -run XXX -fuzz FuzzClientPathMapping -fuzztime 60s ./node/
