# Protocol tooling: pinned buf and protoc plugins in ./bin, generation, lint,
# breaking-change check, and a check that committed generated code is current.

BIN := $(CURDIR)/bin
GO  ?= go

BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2

.PHONY: tools generate descriptors lint-proto breaking check-generated

# The reference ministries' descriptor sets, named with their digests by
# deploy/federation.yaml: bus and gateway compile no ministry's schema in,
# they load these (bus/descset), as they load a member that joined later.
# member=proto file of its service.
REFERENCE_DESCRIPTORS := civil-registry=jisr/civilregistry/v1/civilregistry.proto \
	tax=jisr/tax/v1/tax.proto cnss=jisr/cnss/v1/cnss.proto health=jisr/health/v1/health.proto

tools: ## Install buf and the protoc plugins (pinned) into ./bin
	@mkdir -p $(BIN)
	@if ! $(BIN)/buf --version 2>/dev/null | grep -qx '$(BUF_VERSION:v%=%)'; then \
		echo "installing buf $(BUF_VERSION) (takes a few minutes the first time)"; \
		GOBIN=$(BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION); fi
	@if ! $(BIN)/protoc-gen-go --version 2>/dev/null | grep -q '$(PROTOC_GEN_GO_VERSION)'; then \
		GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION); fi
	@if ! $(BIN)/protoc-gen-go-grpc --version 2>/dev/null | grep -q '$(PROTOC_GEN_GO_GRPC_VERSION:v%=%)'; then \
		GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION); fi

generate: tools ## Regenerate Go code from proto/ and the reference descriptor sets (deploy/*.binpb)
	$(BIN)/buf generate
	gofmt -w proto/gen
	@$(MAKE) --no-print-directory descriptors

descriptors: tools ## Build deploy/<member>.binpb for the four reference ministries (buf build)
	@for d in $(REFERENCE_DESCRIPTORS); do \
		$(BIN)/buf build --exclude-source-info --path proto/$${d#*=} -o deploy/$${d%%=*}.binpb || exit 1; \
		for c in bus/testdata gateway/testdata cmd/testdata bus/bustest deploy/helm/jisr/descriptors; do cp deploy/$${d%%=*}.binpb $$c/; done; done

lint-proto: tools ## buf lint
	$(BIN)/buf lint

breaking: tools ## buf breaking against main (no-op without history)
	@if git rev-parse --verify -q main >/dev/null; then \
		$(BIN)/buf breaking --against '.git#branch=main'; \
	else echo "no main branch yet: nothing to compare against"; fi

check-generated: generate ## Fail if generated code differs from what is committed
	@git diff --exit-code -- proto/gen '*.binpb' || { echo "generated code is stale: run make generate and commit"; exit 1; }
	@untracked=$$(git ls-files --others --exclude-standard proto/gen '*.binpb'); \
	if [ -n "$$untracked" ]; then echo "untracked generated files: $$untracked"; exit 1; fi
