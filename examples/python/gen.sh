#!/bin/sh
# Generates the Python stubs of jisr's protos into ./gen (not committed):
# messages with Debian's protoc (protobuf-compiler, 3.21: the same major as
# python3-protobuf), services with grpc_tools (python3-grpc-tools), and
# google.rpc.Status/ErrorInfo (to read refusals) and grpc.health.v1 from
# examples/proto.
#   sudo apt-get install protobuf-compiler python3-grpcio python3-grpc-tools python3-protobuf
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$here/../..
out=$here/gen
py=${PYTHON:-/usr/bin/python3}
rm -rf "$out" && mkdir -p "$out"
cd "$root/proto"
protos=$(find jisr -name '*.proto' | sort)
protoc -I . -I "$root/examples/proto" --python_out="$out" $protos google/rpc/status.proto google/rpc/error_details.proto grpc/health/v1/health.proto
"$py" -m grpc_tools.protoc -I . -I "$root/examples/proto" -I /usr/include --grpc_python_out="$out" \
	$(find jisr -name '*.proto' -path '*/v1/*' ! -path 'jisr/v1/*' | sort) grpc/health/v1/health.proto
echo "stubs in $out"
