#!/bin/sh
# Runs the Java consumer (build it with ./build.sh): run.sh [var/demo.json]
here=$(cd "$(dirname "$0")" && pwd)
exec java -cp "$here/out/classes:$("$here/classpath.sh")" example.Consumer "$@"
