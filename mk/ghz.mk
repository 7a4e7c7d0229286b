# The independent load test of issue 14: ghz (built once from the Go module
# proxy into a cache keyed by its version, outside the work tree, and linked
# into bin/) through the CNSS adapter of a running `jisr dev`, against an
# independent raw NATS two-hop relay (`jisr raw-relay`, cmd/internal/rawrelay:
# front, relay and responder as separate processes on a plain NATS server)
# in the same run. A measurement, not a test: it asserts nothing about speed,
# and is not in .ci/run. mk/ghz.sh does the work; it needs jq.

GHZ_VERSION := v0.93.0
GHZ_CACHE   := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/jisr/ghz-$(GHZ_VERSION)

.PHONY: ghz bench-ghz

ghz: ## Build ghz (cached by version) and link it into bin/
	@mkdir -p $(GHZ_CACHE) $(BIN)
	@if [ ! -x $(GHZ_CACHE)/ghz ]; then \
		echo "building ghz $(GHZ_VERSION) into $(GHZ_CACHE) (a minute or two the first time)"; \
		cd $(GHZ_CACHE) && GOWORK=off GOFLAGS= GOBIN=$(GHZ_CACHE) $(GO) install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION); \
	fi
	@ln -sf $(GHZ_CACHE)/ghz $(BIN)/ghz

bench-ghz: build ghz ## ghz through jisr dev's CNSS adapter against a raw NATS two-hop relay, same run (bench/results/ghz.md; GHZ_CONCURRENCY, GHZ_DURATION)
	JISR=$(BIN)/jisr GHZ=$(BIN)/ghz GHZ_VERSION=$(GHZ_VERSION) bash mk/ghz.sh
