package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/jisr-bus/jisr/cmd/internal/process"
)

// tracesFromFlag: where the auditor's console reads traces (docs/console.md).
func tracesFromFlag(cmd *cobra.Command, g *process.Env) {
	cmd.Flags().StringVar(&g.TracesFrom, "traces-from", os.Getenv("JISR_TRACES_FROM"),
		"the auditor's console reads each trace from this tracing backend's query API, and says so; when the backend cannot answer it shows the gateway's in-memory spans under a banner saying why: jaeger=<URL of Jaeger's query service>, e.g. jaeger=http://127.0.0.1:16686 (plaintext on loopback only; the spans get there by --otlp) (env JISR_TRACES_FROM)")
}
