package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/jisr-bus/jisr/cmd/internal/process"
)

func main() {
	// A jisr process keeps a small heap (tens of MiB) and allocates per
	// query: collecting at 4× the live heap instead of 2× halves the GC's
	// CPU for a few MiB. GOGC in the environment still wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		var ue process.UsageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, "jisr:", err)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "jisr:", err)
		os.Exit(1)
	}
}
