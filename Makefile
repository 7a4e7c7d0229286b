# jisr — one Makefile for the whole go.work workspace. `./...` does not cross
# module boundaries, so every Go target loops over MODULES.

MODULES := proto certs bus gateway services cmd
BIN     := $(CURDIR)/bin
GO      ?= go
export PATH := $(BIN):$(PATH)

.DEFAULT_GOAL := build
.PHONY: build test test-short lint vet fmt fmt-check run bench tidy clean


build: ## Build the jisr binary into bin/jisr
	cd cmd && $(GO) build -o $(BIN)/jisr ./jisr

test: ## Run every module's tests with the race detector
	@set -e; for m in $(MODULES); do \
		echo "== go test -race $$m"; \
		(cd $$m && $(GO) test -race -count=1 -timeout 15m ./...); \
	done

test-short: ## Every module's tests with -short, without -race (quick local loop; skips the multi-process runs)
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) test -short -count=1 ./...); done

# Heavier suites (a NATS cluster, SPIRE, a browser, PostgreSQL) sit behind build
# tags and their own targets in mk/*.mk, each adding its tag here so that vet
# still sees every file.
VET_TAGS ?=

vet: ## go vet every module (every suite's build tags included)
	@set -e; for m in $(MODULES); do echo "== go vet $$m"; (cd $$m && $(GO) vet -tags '$(strip $(VET_TAGS))' ./...); done

fmt: ## gofmt every Go file
	gofmt -w $$(git ls-files '*.go')

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

lint: fmt-check vet lint-imports lint-proto check-generated ## gofmt, go vet, import rules, buf lint, generated code up to date

run: build ## The whole federation on this machine with demo data (jisr dev)
	$(BIN)/jisr dev

bench: build ## The performance report (bench/results/)
	$(BIN)/jisr bench

tidy:
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) mod tidy); done

clean:
	rm -rf $(BIN)/jisr var

-include mk/*.mk
