#!/bin/sh
# Runs the Java CNSS backend (build it with ./build.sh): provider.sh [127.0.0.1:9003]
here=$(cd "$(dirname "$0")" && pwd)
exec java -cp "$here/out/classes:$("$here/classpath.sh")" example.Provider "$@"
