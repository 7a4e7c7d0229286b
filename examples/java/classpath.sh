#!/bin/sh
# The runtime classpath, from Debian's /usr/share/java.
j=/usr/share/java
cp=""
for jar in grpc-api grpc-core grpc-context grpc-stub grpc-protobuf grpc-protobuf-lite grpc-netty \
	protobuf guava gson perfmark-api netty-buffer netty-codec netty-codec-http netty-codec-http2 \
	netty-codec-socks netty-common netty-handler netty-handler-proxy netty-resolver netty-transport \
	opencensus-api; do
	cp="$cp:$j/$jar.jar"
done
echo "${cp#:}"
