package main

import (
	"fmt"
	"strconv"

	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/spf13/cobra"
)

func newNATSCmd(g *process.Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "nats",
		Short: "Manage the federation's JetStream state (as the operator)",
	}
	var auditAccount bool
	var replicas int
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create, or check, every stream and bucket of the federation (as the operator)",
		Long: `Connect to --nats as the operator identity (spiffe://<td>/operator) and create
every JetStream stream and key-value bucket the federation keeps its state in:
the audit records (JISR_AUDIT) and checkpoints (JISR_CHECKPOINTS), and the
consent grants, revocations and use counters (jisr_consents, jisr_revocations,
jisr_usage). Each denies deletes and purges, allows no roll-up and no
per-message TTL, and refuses new messages when full.

Existing ones are checked. One that allows deletes, purges or roll-ups, or
drops old messages when full (a bucket made by an older jisr), has those
rights taken away — nothing stored is removed; one that cannot be made safe
(per-message TTLs, other subjects, storage or retention) is refused, named,
and left as it is. With --replicas 3 (a hub of three nodes) every stream and
bucket is kept on three nodes, with the same protections; one that has fewer
replicas is raised (JetStream copies what it holds). The gateway, the consent service and the auditor only
open them, and refuse to start until this has run. The audit retention comes
from the --audit-* flags (default: the JISR_AUDIT_* variables), as for the gateway.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if replicas != 0 {
				if g.Audit.Replicas != "" && g.Audit.Replicas != strconv.Itoa(replicas) {
					return process.UsageError{Err: fmt.Errorf("--replicas %d and --audit-replicas %s disagree", replicas, g.Audit.Replicas)}
				}
				g.Audit.Replicas = strconv.Itoa(replicas)
			}
			return process.NATSInitWith(cmd.Context(), g, cmd.OutOrStdout(), auditAccount)
		},
	}
	initCmd.Flags().BoolVar(&auditAccount, "audit-account", false, "the server keeps the audit streams in their own account (jisr nats-config --audit-account): create them there as spiffe://<td>/audit-operator (see docs/audit.md)")
	initCmd.Flags().IntVar(&replicas, "replicas", 0, "JetStream replicas of every stream and bucket: 1, 3 or 5 (3 on a hub of three nodes; an existing stream with fewer is raised); the same as --audit-replicas")
	auditFlags(initCmd, &g.Audit)
	cmd.AddCommand(initCmd)
	return cmd
}
