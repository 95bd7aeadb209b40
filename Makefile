# ArqonBus. `make run` starts the bus on its defaults; `make test` runs every test.
GO      ?= go
BIN     := bin
# The commit and build time GET /version reports (scripts/ldflags.sh).
LDFLAGS  = $(shell bash scripts/ldflags.sh)
# Executions, not a duration: a -fuzztime duration can fail spuriously with "context deadline exceeded"
# when it expires (Go 1.26 fuzz coordinator race, go.dev/issue/75804, fixed in Go 1.27).
FUZZTIME ?= 100000x

.PHONY: run build test test-deps unit fuzz-short fuzz-long bench soak lint fmt vet clean

build: ## build the server and the load generator into bin/
	@echo "==> building bin/arqonbus and bin/arqonbus-load"
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/arqonbus ./cmd/arqonbus
	$(GO) build -o $(BIN)/arqonbus-load ./perf/cmd/arqonbus-load

run: ## start the bus on its defaults (ws://127.0.0.1:9100, dashboard on http://127.0.0.1:8080/)
	@bash scripts/run.sh

test-deps: ## install what the tests need (redis-server, chromium, Node packages) when missing
	@bash scripts/install-test-deps.sh

test: test-deps lint ## vet, gofmt, race-enabled tests, short fuzz runs
	@echo "==> go test -race ./... (unit; integration against the real binary, itself built with -race; Node; headless Chromium)"
	ARQONBUS_E2E_RACE=1 $(GO) test -race -count=1 -timeout 14m ./...
	@$(MAKE) --no-print-directory fuzz-short

fuzz-short: ## a short run of each fuzz target, counted in executions (longer: make fuzz-short FUZZTIME=20000000x)
	@echo "==> fuzzing each target for $(FUZZTIME)"
	$(GO) test -run='^$$' -fuzz='^FuzzDecode$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=1000x ./codec/
	$(GO) test -run='^$$' -fuzz='^FuzzAppendString$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=1000x ./codec/
	$(GO) test -run='^$$' -fuzz='^FuzzFrameReader$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=1000x ./engine/
	$(GO) test -run='^$$' -fuzz='^FuzzUpgrade$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=1000x ./engine/
	$(GO) test -run='^$$' -fuzz='^FuzzDecodePeer$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=1000x ./bus/
	$(GO) test -run='^$$' -fuzz='^FuzzCommandParams$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=1000x ./bus/

bench: build ## load-test a fresh server: fan-out, channels, commands, idle (BENCH_RUNS=3 for medians; see scripts/bench.sh)
	@bash scripts/bench.sh

fuzz-long: ## an hour per fuzz target (FUZZ_DURATION=1h), keeping the corpus under testdata/fuzz/
	@bash scripts/fuzz-long.sh

soak: ## a long mixed load against a fresh server, one line a minute, verdict flat or not (SOAK_DURATION=30m, SOAK_STORAGE=redis; see scripts/soak.sh); not part of make test
	@bash scripts/soak.sh

gobench: ## in-process micro-benchmarks with allocations
	$(GO) test -run='^$$' -bench=. -benchmem ./codec/ ./engine/ ./fanout/ ./bus/ ./telemetry/ ./cluster/

lint: vet fmt ## go vet and gofmt

vet:
	@echo "==> go vet"
	$(GO) vet ./...

fmt:
	@echo "==> gofmt check"
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './e2e/node/*')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

clean:
	rm -rf $(BIN) perf/results
