package main

import (
	"os"

	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/spf13/cobra"
)

func auditFlags(cmd *cobra.Command, a *process.AuditFlags) {
	f := cmd.Flags()
	f.StringVar(&a.MaxAge, "audit-max-age", os.Getenv("JISR_AUDIT_MAX_AGE"), "how long audit records are kept, a duration (empty: 87600h, 10 years) (env JISR_AUDIT_MAX_AGE)")
	f.StringVar(&a.CheckpointMaxAge, "audit-checkpoint-max-age", os.Getenv("JISR_AUDIT_CHECKPOINT_MAX_AGE"), "how long audit checkpoints are kept (empty: as long as the records) (env JISR_AUDIT_CHECKPOINT_MAX_AGE)")
	f.StringVar(&a.CheckpointEvery, "audit-checkpoint-every", os.Getenv("JISR_AUDIT_CHECKPOINT_EVERY"), "how often the gateway signs a checkpoint (empty: 15s) (env JISR_AUDIT_CHECKPOINT_EVERY)")
	f.StringVar(&a.MaxBytes, "audit-max-bytes", os.Getenv("JISR_AUDIT_MAX_BYTES"), "size cap of the record stream in bytes; when full, new records and so queries are refused (empty or 0: unlimited) (env JISR_AUDIT_MAX_BYTES)")
	f.StringVar(&a.Replicas, "audit-replicas", os.Getenv("JISR_AUDIT_REPLICAS"), "JetStream replicas of the audit streams: 1, 3 or 5 (empty: 1) (env JISR_AUDIT_REPLICAS)")
}
