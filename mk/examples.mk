# The examples of docs/integrate.md (examples/go, examples/python), built and
# run against a real `jisr dev`: a provider backend in each language replaces
# the reference CNSS backend (--backend), the other language's consumer calls
# it and reads each refusal's google.rpc.ErrorInfo. Needs Go and Debian's
# protobuf-compiler, python3-grpcio, python3-grpc-tools, python3-protobuf
# (.ci/run installs them when missing).

.PHONY: test-examples

VET_TAGS += examples

test-examples: ## Build and run the Go and Python examples against jisr dev (build tag examples)
	cd cmd && $(GO) test -tags examples -count=1 -run TestExamples ./jisr/
