#!/bin/sh
# Builds the Java consumer and provider with Debian's packages only (no Maven Central):
#   sudo apt-get install default-jdk-headless protobuf-compiler \
#     protobuf-compiler-grpc-java-plugin libgrpc-java libprotobuf-java \
#     libnetty-java libperfmark-java libgoogle-gson-java
# Stubs: protoc --java_out and Debian's grpc_java_plugin; google.rpc
# Status/ErrorInfo and grpc.health.v1 from examples/proto (Debian has no
# proto-google-common-protos nor grpc-services). Output: ./out (not committed).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$here/../..
out=$here/out
rm -rf "$out" && mkdir -p "$out/gen" "$out/classes"
cd "$root/proto"
protoc -I . -I "$root/examples/proto" --java_out="$out/gen" \
	--plugin=protoc-gen-grpc-java=/usr/bin/grpc_java_plugin --grpc-java_out="$out/gen" \
	jisr/v1/options.proto jisr/v1/types.proto jisr/cnss/v1/cnss.proto google/rpc/status.proto google/rpc/error_details.proto \
	grpc/health/v1/health.proto
# Debian's grpc_java_plugin (1.41) cannot omit @javax.annotation.Generated,
# which Java 11+ no longer has: drop it.
find "$out/gen" -name '*Grpc.java' -exec sed -i '/^@javax.annotation.Generated(/,/)$/d' {} +
javac -nowarn -d "$out/classes" -cp "$("$here/classpath.sh")" $(find "$out/gen" "$here/src" -name '*.java')
echo "built $out/classes"
