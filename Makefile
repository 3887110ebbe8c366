# retryhub — the two commands: `make run` and `make test`.
GO       ?= go
PKGS     := ./client-sdk/... ./server/... ./examples/...
BIN      := bin/retryhub-server
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/retryhub/retryhub/server/internal/app.Version=$(VERSION)

.PHONY: run test test-cluster fuzz build lint bench bench-10m demo clean web web-test

## run: start one server on http://localhost:8080 with the embedded SQLite database under ./data
run:
	$(GO) run -ldflags "$(LDFLAGS)" ./server/cmd/retryhub-server

## test: every test, with the race detector; the MariaDB suite runs whenever MariaDB answers
##       on 127.0.0.1:3306 (RETRYHUB_TEST_MYSQL_DSN to point elsewhere)
test: lint
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

## test-cluster: the fault run (a few minutes, MariaDB on 127.0.0.1:3306 required): three server
##               processes and an SDK client process with a spool, 20,000 tasks that fail twice
##               then succeed, while one server and the client are killed with SIGKILL and the
##               servers lose the database for 20 s; prints what it measured
test-cluster:
	RETRYHUB_TEST_CLUSTER=1 RETRYHUB_TEST_REQUIRE_MYSQL=1 $(GO) test -race -count=1 -v -timeout 15m \
		-run TestClusterSurvivesKillsAndADatabaseCut ./server/internal/cluster/

## fuzz: each fuzz target for FUZZTIME (10s), one after another: policies and scene declarations,
##       request signing, the spool's journal, the client API's bodies. A failure leaves its input
##       under the package's testdata/fuzz: fix the bug and commit the input, which `make test`
##       then runs for good. Go 1.26's fuzzing can stop with "context deadline exceeded" as its
##       time runs out (go.dev/issue/75804): without a new failing input that is no finding.
FUZZTIME ?= 10s
FUZZ_TARGETS := ./client-sdk/backoff:FuzzPolicy ./server/internal/retry:FuzzSceneDeclaration \
	./client-sdk/protocol:FuzzVerify \
	./client-sdk/internal/spool:FuzzSpoolFile ./client-sdk/internal/spool:FuzzSpoolRoundTrip \
	./server/internal/api/clientapi:FuzzClientAPI
fuzz:
	@out=$$(mktemp); trap 'rm -f "$$out"' EXIT; \
	for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; corpus=$$pkg/testdata/fuzz/$$fn; \
		before=$$(ls "$$corpus" 2>/dev/null | wc -l); \
		echo "fuzz: $$fn ($$pkg) for $(FUZZTIME)"; \
		if $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 100x $$pkg >"$$out" 2>&1; then \
			tail -n 2 "$$out"; continue; \
		fi; \
		cat "$$out"; \
		if [ "$$(ls "$$corpus" 2>/dev/null | wc -l)" -gt "$$before" ] || ! grep -qx '    context deadline exceeded' "$$out"; then \
			echo "fuzz: $$fn failed; its input is under $$corpus"; exit 1; \
		fi; \
		echo "fuzz: $$fn: Go's deadline race at the end of the run (go.dev/issue/75804), no failing input"; \
	done

## build: the server binary in ./bin
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./server/cmd/retryhub-server

## lint: formatting and go vet
lint:
	@unformatted=$$(gofmt -l client-sdk server examples); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)

## demo: a server on a fresh SQLite database and the example order service driving it for about
##       30 s through a flaky broker and partner, then a summary (DEMO_PORT, DEMO_SECONDS;
##       DEMO_SMTP=localhost:1025 mails its alerts to a local SMTP catcher such as Mailpit)
demo:
	GO="$(GO)" bash examples/demo.sh

## bench: the benchmarks (numbers that matter are measured here, never asserted in tests):
##        the SDK's call overhead, then the server's ingest (SDK and signed API) beside a raw
##        multi-row INSERT, replays on a real SDK client beside loopback HTTP round trips, the
##        due→dispatch lag beside 10k and 1M waiting tasks (a separate server process: its
##        memory; rh_task's bytes per task), then every console list read over a million tasks
##        (RETRYHUB_BENCH_LIST_TASKS). One table at the end, also as JSON in bench-results.json
##        (RETRYHUB_BENCH_OUT); RETRYHUB_BENCH_PEERS=../shared/peers/out prints River beside it;
##        RETRYHUB_BENCH_TASKS sizes the ingest and replay runs. About 10 minutes.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./client-sdk/...
	GO="$(GO)" RETRYHUB_BENCH_OUT="$${RETRYHUB_BENCH_OUT:-$(CURDIR)/bench-results.json}" \
		$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./server/internal/bench/

## bench-10m: the due→dispatch lag beside 10k, 1M and 10M waiting tasks on MariaDB (loads
##            10M rows once, about 7 GB and several minutes), with the server's memory and the
##            bytes per task; the table goes to bench-results-10m.json
bench-10m:
	GO="$(GO)" RETRYHUB_BENCH_BACKLOG=10000000 RETRYHUB_BENCH_OUT="$${RETRYHUB_BENCH_OUT:-$(CURDIR)/bench-results-10m.json}" \
		$(GO) test -run '^$$' -bench 'DueLag/mysql' -benchtime 1x -timeout 180m ./server/internal/bench/

## web: rebuild the console (needs Node 20+): install its packages when the lock changed, write
##      the console API's document and the typed client generated from it, type-check, and build
##      into server/internal/web/static (committed, so `make run` needs Go alone)
web: web/node_modules/.package-lock.json
	$(GO) run ./server/cmd/retryhub-openapi -o web/src/api/openapi.json
	cd web && npx openapi-typescript src/api/openapi.json -o src/api/schema.d.ts
	cd web && npx vue-tsc --noEmit -p tsconfig.app.json
	cd web && npx vite build

web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	cd web && npm ci

## web-test: the console's unit tests, then its browser tests (Debian's chromium at
##            /usr/bin/chromium, a server built from this tree, an SDK client reporting failures)
web-test: web/node_modules/.package-lock.json
	cd web && npx vitest run
	cd web && node --test --test-concurrency=1 e2e/specs/*.spec.mjs

clean:
	rm -rf bin data
