# ssemesh developer entry points. `make test` is the one command that runs
# every test on a fresh machine: it installs what the tests need first.
GO ?= go
export GOTOOLCHAIN ?= local

.PHONY: test test-unit deps demo build vet bench fuzz release test-deploy test-netns

# The network-namespace drill needs root; it runs whenever make test runs as
# root (always in CI), and elsewhere the test says it was skipped.
test: deps vet
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) test-deploy
	if [ "$$(id -u)" = 0 ]; then $(MAKE) test-netns; else echo "test-netns skipped: needs root"; fi

# The fast tier: topology, relay and the retry and pacing helpers whole,
# mesh on its in-memory Consul and pure gossip state, node's routing and
# configuration on fakes. No network beyond loopback sockets, no Consul
# binary; about 20 s. UNIT_FLAGS=-count=5 repeats it.
test-unit:
	$(GO) test -short -race $(UNIT_FLAGS) ./topology/ ./relay/ ./internal/retry/ ./internal/admit/
	$(GO) test -short -race $(UNIT_FLAGS) -run 'ConsulFake|RemoteHold|FakeConsul|TestRemote|TestSuspicionStates|TestProbe' ./mesh/
	$(GO) test -short -race $(UNIT_FLAGS) -run 'TestRouter|TestChooseParentOnView|TestAvoid|TestReroute|TestAdvertise|TestCheckedAdvertise|TestPickIPv4|TestMeshError|TestMeshSection|TestLoad|TestBadConfig|TestKeyReference' ./node/

# Faults across two data centres in network namespaces (partition, delay
# and loss, a gateway killed, a Consul server restarted), about 3 minutes.
test-netns:
	bash scripts/netns-faults.sh run

# The deployment files: Kubernetes manifests decoded into the API types and
# checked against a real node's --check (a module of its own, so the main
# go.mod stays small), then the release build's reproducibility, the Debian
# package installed with dpkg, the systemd unit and the container image.
test-deploy:
	cd deploy/k8s && $(GO) vet ./... && $(GO) test -count=1 ./...
	bash scripts/release.sh --out dist
	bash scripts/release.sh --out dist --verify
	bash scripts/test-packages.sh

deps:
	bash scripts/install-test-deps.sh

vet:
	@unformatted="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	  if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

demo:
	$(GO) run ./cmd/ssemesh demo

# -buildvcs=true: the binary records its commit (ssemesh version), whatever
# GOFLAGS says.
build:
	mkdir -p bin
	$(GO) build -buildvcs=true -o bin/ssemesh ./cmd/ssemesh
	$(GO) build -buildvcs=true -o bin/ssemesh-bench ./cmd/ssemesh-bench

# Static, reproducible release binaries for linux/amd64 and linux/arm64,
# with SHA256SUMS, in dist/.
release:
	bash scripts/release.sh --out dist

fuzz:
	$(GO) test -run XXX -fuzz FuzzParser -fuzztime 60s ./internal/sse/
	$(GO) test -run XXX -fuzz FuzzClientPathMapping -fuzztime 60s ./node/
