# SPIRE for real: spire-server and spire-agent built once from the Go module
# proxy (about ten minutes on two cores) into a cache keyed by their version,
# outside the work tree, and linked into bin/. tools/spire pins them (a module
# of its own, outside go.work). The suite behind the `spire` build tag starts
# them, registers `jisr spire entries` and runs the federation on the
# Workload API (cmd/jisr/spire_e2e_test.go, docs/spire.md).

SPIRE_VERSION := v1.13.3
SPIRE_CACHE   := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/jisr/spire-$(SPIRE_VERSION)/bin

VET_TAGS += spire

.PHONY: spire test-spire

spire: ## Build spire-server and spire-agent (cached by version) and link them into bin/
	@mkdir -p $(SPIRE_CACHE) $(BIN)
	@if [ ! -x $(SPIRE_CACHE)/spire-server ] || [ ! -x $(SPIRE_CACHE)/spire-agent ]; then \
		echo "building SPIRE $(SPIRE_VERSION) into $(SPIRE_CACHE) (about ten minutes the first time)"; \
		cd tools/spire && GOWORK=off $(GO) build -o $(SPIRE_CACHE)/ \
			github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent; \
	fi
	@ln -sf $(SPIRE_CACHE)/spire-server $(BIN)/spire-server
	@ln -sf $(SPIRE_CACHE)/spire-agent $(BIN)/spire-agent
	@$(BIN)/spire-server --version 2>&1 | head -1

test-spire: spire ## The SPIRE suite: the federation on SPIRE's Workload API, SVIDs rotating under load
	cd cmd && JISR_SPIRE_BIN=$(BIN) $(GO) test -race -count=1 -tags spire -run 'SPIRE' -timeout 15m ./jisr
