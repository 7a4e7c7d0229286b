# Jaeger for real: the auditor's console reading a query's trace from a
# tracing backend's query API. jaeger-all-in-one v1 (in-memory storage,
# OTLP receiver, query service) is built once from the Go module proxy
# (about eight minutes on two shared cores) into a cache keyed by its
# version, outside the work tree, and linked into bin/. tools/jaeger pins
# it (a module of its own, outside go.work). The suite behind the `jaeger`
# build tag starts it on loopback and runs jisr dev with --otlp pointing at
# it and --traces-from at its query API (cmd/jisr/jaeger_e2e_test.go,
# docs/console.md).

JAEGER_VERSION := v1.76.0
JAEGER_CACHE   := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/jisr/jaeger-$(JAEGER_VERSION)/bin

VET_TAGS += jaeger

.PHONY: jaeger test-jaeger

jaeger: ## Build jaeger-all-in-one (cached by version) and link it into bin/
	@mkdir -p $(JAEGER_CACHE) $(BIN)
	@if [ ! -x $(JAEGER_CACHE)/jaeger-all-in-one ]; then \
		echo "building Jaeger $(JAEGER_VERSION) all-in-one into $(JAEGER_CACHE) (about eight minutes the first time)"; \
		cd tools/jaeger && GOWORK=off $(GO) build -o $(JAEGER_CACHE)/jaeger-all-in-one github.com/jaegertracing/jaeger/cmd/all-in-one; \
	fi
	@ln -sf $(JAEGER_CACHE)/jaeger-all-in-one $(BIN)/jaeger-all-in-one

test-jaeger: jaeger ## The console reads a query's trace from a real Jaeger (OTLP in, /api/traces out), and says so when Jaeger is gone
	cd cmd && JISR_JAEGER_BIN=$(BIN) $(GO) test -race -count=1 -tags jaeger -run '^TestConsoleReadsTracesFromJaeger$$' -timeout 10m ./jisr
