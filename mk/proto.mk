# Protocol tooling: pinned buf and protoc plugins in ./bin, generation, lint,
# breaking-change check, and a check that committed generated code is current.

BIN := $(CURDIR)/bin
GO  ?= go

BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2

.PHONY: tools generate lint-proto breaking check-generated

tools: ## Install buf and the protoc plugins (pinned) into ./bin
	@mkdir -p $(BIN)
	@if ! $(BIN)/buf --version 2>/dev/null | grep -qx '$(BUF_VERSION:v%=%)'; then \
		echo "installing buf $(BUF_VERSION) (takes a few minutes the first time)"; \
		GOBIN=$(BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION); fi
	@if ! $(BIN)/protoc-gen-go --version 2>/dev/null | grep -q '$(PROTOC_GEN_GO_VERSION)'; then \
		GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION); fi
	@if ! $(BIN)/protoc-gen-go-grpc --version 2>/dev/null | grep -q '$(PROTOC_GEN_GO_GRPC_VERSION:v%=%)'; then \
		GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION); fi

generate: tools ## Regenerate Go code from proto/
	$(BIN)/buf generate
	gofmt -w proto/gen

lint-proto: tools ## buf lint
	$(BIN)/buf lint

breaking: tools ## buf breaking against main (no-op without history)
	@if git rev-parse --verify -q main >/dev/null; then \
		$(BIN)/buf breaking --against '.git#branch=main'; \
	else echo "no main branch yet: nothing to compare against"; fi

check-generated: generate ## Fail if generated code differs from what is committed
	@git diff --exit-code -- proto/gen || { echo "generated code is stale: run make generate and commit"; exit 1; }
	@untracked=$$(git ls-files --others --exclude-standard proto/gen); \
	if [ -n "$$untracked" ]; then echo "untracked generated files: $$untracked"; exit 1; fi
