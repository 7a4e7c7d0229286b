# The examples of docs/integrate.md (examples/go, examples/python,
# examples/java), built and run against a real `jisr dev`: a provider backend
# in Go, Python and Java replaces the reference CNSS backend (--backend), a
# consumer in another language calls it and read each refusal's
# google.rpc.ErrorInfo. Needs Go, and from Debian protobuf-compiler,
# python3-grpcio, python3-grpc-tools, python3-protobuf, default-jdk-headless,
# protobuf-compiler-grpc-java-plugin, libgrpc-java, libprotobuf-java,
# libnetty-java, libperfmark-java, libgoogle-gson-java (.ci/run installs them
# when missing). About 40-70 s on 2 cores (javac is most of it).

.PHONY: test-examples

VET_TAGS += examples

test-examples: ## Build and run the Go, Python and Java examples against jisr dev (build tag examples)
	cd cmd && $(GO) test -tags examples -count=1 -run TestExamples ./jisr/
