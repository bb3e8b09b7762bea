# Cordon — one module, one Makefile. `make help` lists the targets.

GO        ?= go
BIN       := bin/cordon
PKGS      := ./...
FUZZTIME  ?= 10s
# BENCHFLAGS go to cordon-bench, e.g. make bench BENCHFLAGS="--only enforce".
BENCHFLAGS ?=
GOFLAGS   ?=
export GOFLAGS

.PHONY: help build build-server nats-server run test vet fuzz bench chdb clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

chdb: ## install the chDB library (ClickHouse engine) into the user cache, once
	@bash scripts/install-chdb.sh

build: ## build bin/cordon (with the embedded chDB)
	$(GO) build -o $(BIN) ./cmd/cordon

build-server: ## build bin/cordon-server without chDB (-tags nochdb): for the distributed services
	$(GO) build -tags nochdb -o bin/cordon-server ./cmd/cordon

nats-server: ## build bin/nats-server from the nats-server module (cluster tests, deployments)
	bash scripts/build-nats-server.sh

run: chdb build ## bring up the whole system in one process and run the leak drill
	./$(BIN) up --demo

vet: ## go vet and gofmt check
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "not gofmt-ed:"; echo "$$out"; exit 1; fi

test: chdb vet ## run every test (real NATS JetStream and real chDB)
	$(GO) test -count=1 -timeout 20m $(PKGS)

fuzz: chdb ## run each fuzz target for FUZZTIME (default 10s); failing inputs land in testdata/fuzz
	GO=$(GO) FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

bench: chdb ## measure latency, throughput and memory on this machine; writes BENCHMARKS.md
	$(GO) run ./cmd/cordon-bench --out BENCHMARKS.md $(BENCHFLAGS)

clean: ## remove build output and local state
	rm -rf bin .cordon
