package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/jisr-bus/jisr/gateway/audit/auditor"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/export"
	barpkg "github.com/jisr-bus/jisr/services/progress"
)

func newAuditCmd(g *process.Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read, export and verify the audit log (as the auditor identity)",
		Long: `Every decision of every gateway — allowed or refused — is one record in the
JetStream stream JISR_AUDIT, a leaf of its gateway instance's Merkle log, covered
by signed checkpoints in JISR_CHECKPOINTS (docs/audit.md).

These commands connect to NATS as the auditor (spiffe://<td>/auditor, its SVID in
--certs), which may read the audit streams and nothing else; members may not.
A citizen's eID given to --citizen is turned into their citizen key locally and
never sent anywhere.`,
	}
	cmd.AddCommand(newAuditTailCmd(g), newAuditQueryCmd(g), newAuditExportCmd(g), newAuditVerifyCmd(g), newAuditKeysCmd(g))
	return cmd
}

// selection is the flags query, tail and export select records by.
type selection struct {
	auditor.Selection
	citizen, since, until string
}

func (s *selection) flags(cmd *cobra.Command, times bool) {
	f := cmd.Flags()
	f.StringVar(&s.citizen, "citizen", "", "a citizen's eID (\"-\" reads it from stdin, keeping it out of the process list); turned into the citizen key locally")
	f.StringVar(&s.CKey, "ckey", "", "a citizen key, as recorded")
	f.StringVar(&s.Consumer, "consumer", "", "only queries by this member")
	f.StringVar(&s.Provider, "provider", "", "only queries to this member")
	f.StringVar(&s.Log, "log", "", "only records of this gateway instance's log")
	f.StringVar(&s.Decision, "decision", "", "only allowed or refused decisions")
	if times {
		f.StringVar(&s.since, "since", "", "from this time: RFC 3339, a date (2026-11-23), or a duration ago (24h)")
		f.StringVar(&s.until, "until", "", "up to this time, same forms")
	}
}

// resolve validates the flags: the eID into the citizen key, the times.
func (s *selection) resolve(g *process.Env, stdin io.Reader) error {
	if s.citizen != "" && s.CKey != "" {
		return process.UsageError{Err: errors.New("--citizen and --ckey are exclusive")}
	}
	if s.Decision != "" && s.Decision != "allowed" && s.Decision != "refused" {
		return process.UsageError{Err: fmt.Errorf("--decision %q: allowed or refused", s.Decision)}
	}
	if s.citizen != "" {
		ckey, err := process.CitizenKey(g, s.citizen, stdin)
		if err != nil {
			return err
		}
		s.CKey = ckey
	}
	var err error
	now := time.Now()
	if s.From, err = auditor.ParseWhen(s.since, now); err != nil {
		return process.UsageError{Err: fmt.Errorf("--since: %w", err)}
	}
	if s.To, err = auditor.ParseWhen(s.until, now); err != nil {
		return process.UsageError{Err: fmt.Errorf("--until: %w", err)}
	}
	if err := s.Resolve(); err != nil {
		return process.UsageError{Err: fmt.Errorf("--%w", err)}
	}
	return nil
}

func newAuditQueryCmd(g *process.Env) *cobra.Command {
	var sel selection
	var asJSON bool
	var limit int
	cmd := &cobra.Command{
		Use:   "query",
		Short: "List the audit records that match: by citizen, member, log, decision and time",
		Example: `  jisr audit query --citizen AB123456
  echo AB123456 | jisr audit query --citizen -
  jisr audit query --consumer cnss --since 24h --decision refused
  jisr audit query --provider civil-registry --since 2026-11-01 --until 2026-11-30 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := sel.resolve(g, cmd.InOrStdin()); err != nil {
				return err
			}
			ctx := cmd.Context()
			st, closeFn, err := process.AuditorStreams(ctx, g)
			if err != nil {
				return err
			}
			defer closeFn()
			return st.PrintQuery(ctx, &sel.Selection, auditor.NewPrinter(cmd.OutOrStdout(), asJSON), limit, asJSON, cmd.ErrOrStderr())
		},
	}
	sel.flags(cmd, true)
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON object per line (seq, subject, record), for tools")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many records (0 = all)")
	return cmd
}

func newAuditTailCmd(g *process.Env) *cobra.Command {
	var sel selection
	var asJSON, follow bool
	var n int
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Show the latest audit records, then follow new ones (Ctrl-C to stop)",
		Example: `  jisr audit tail
  jisr audit tail -n 50 --consumer tax
  jisr audit tail --citizen - --follow=false < eid.txt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := sel.resolve(g, cmd.InOrStdin()); err != nil {
				return err
			}
			if n < 0 {
				return process.UsageError{Err: errors.New("-n must not be negative")}
			}
			ctx := cmd.Context()
			st, closeFn, err := process.AuditorStreams(ctx, g)
			if err != nil {
				return err
			}
			defer closeFn()
			return st.Tail(ctx, &sel.Selection, n, follow, auditor.NewPrinter(cmd.OutOrStdout(), asJSON))
		},
	}
	sel.flags(cmd, false)
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON object per line, for tools")
	cmd.Flags().BoolVarP(&follow, "follow", "f", true, "keep following new records")
	cmd.Flags().IntVarP(&n, "lines", "n", 10, "how many of the latest records to show first")
	return cmd
}

func newAuditExportCmd(g *process.Env) *cobra.Command {
	var sel selection
	var out string
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Export the audit log for the data-protection authority (JSON Lines, verifiable offline)",
		Long: `Write the audit log as JSON Lines: a header (format, trust domain, time, the
logs' public keys), every signed checkpoint, then every record — each with the
exact stored bytes (base64, what the Merkle tree hashes) and a readable copy.

A whole export is verified offline with 'jisr audit verify --file'. An export
narrowed by --citizen, --since, ... is marked partial: its records can be read
but the log cannot be recomputed from it.`,
		Example: `  jisr audit export --out audit-2026-11.jsonl
  jisr audit export --citizen - --out citizen.jsonl < eid.txt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := sel.resolve(g, cmd.InOrStdin()); err != nil {
				return err
			}
			fed, err := g.Federation()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			st, closeFn, err := process.AuditorStreams(ctx, g)
			if err != nil {
				return err
			}
			defer closeFn()
			w := cmd.OutOrStdout()
			if out != "" && out != "-" {
				f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			partial := sel.Narrowed()
			hdr := export.Header{TrustDomain: fed.TrustDomain.Name(), ExportedAt: time.Now(), Partial: partial}
			if partial {
				hdr.Selection = exportSelection(cmd, sel)
			}
			if keys, err := checkpoint.LoadPublicKeys(process.AuditKeyDir(g.CertsDir)); err == nil {
				hdr.Keys = keys.VerifierKeys()
			}
			n, err := st.Export(ctx, export.NewEncoder(w), hdr, &sel.Selection)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "exported %d record(s)%s\n", n, map[bool]string{true: " (partial)", false: ""}[partial])
			return nil
		},
	}
	sel.flags(cmd, true)
	cmd.Flags().StringVarP(&out, "out", "o", "", "write to this new file (default stdout)")
	return cmd
}

// exportSelection writes down what a partial export selected: the flags
// given, with the citizen key in place of the eID.
func exportSelection(cmd *cobra.Command, sel selection) string {
	s := strings.Join(cmd.Flags().Args(), " ")
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if f.Name != "out" && f.Name != "citizen" {
			s += " --" + f.Name + "=" + f.Value.String()
		}
	})
	if sel.citizen != "" {
		s += " --ckey=" + sel.CKey
	}
	return strings.TrimSpace(s)
}

func newAuditVerifyCmd(g *process.Env) *cobra.Command {
	var o verifyOptions
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Recompute every audit log and check it against its signed checkpoints",
		Long: `Read every checkpoint and every record, and check: each checkpoint's signature
with the logs' trusted public keys; that the checkpoints of a log are
consistent with each other (RFC 6962 consistency proofs); that every record
parses, sits on its own subject, appears once, and chains to the one before;
and that the tree recomputed from the records has each checkpoint's signed root.

It names the first bad record of each log (edited, deleted, misfiled) and exits
with status 1 when anything is wrong. Progress goes to stderr.

A log must also still extend every checkpoint seen before, so that a log
erased or cut short (and its checkpoints with it) cannot pass unseen:

  --trusted FILE   a signed checkpoint to check against, e.g. the gateway's
                   own <data>/audit/<instance>.checkpoint (repeatable);
  --seen-dir DIR   the checkpoints this auditor saw at its last successful
                   verification of the live streams, one file per log and key
                   (default $JISR_AUDIT_SEEN_DIR, else <user config
                   dir>/jisr/audit-seen; "none" to keep none). They are
                   checked, then advanced after a successful verification.

Messages on the audit subjects that are not records of any log are named by
their sequence as a warning (--strict: an error).`,
		Example: `  jisr audit verify
  jisr audit verify --keys /etc/jisr/audit-keys
  jisr audit verify --trusted /var/lib/jisr/audit/gw-1.checkpoint
  jisr audit verify --file audit-2026-11.jsonl`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), g, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringSliceVar(&o.trusted, "trusted", nil, "a signed checkpoint file the logs must still extend, e.g. the gateway's <data>/audit/<instance>.checkpoint (repeatable)")
	cmd.Flags().StringVar(&o.seenDir, "seen-dir", os.Getenv("JISR_AUDIT_SEEN_DIR"), `the checkpoints seen at the last successful verification, checked and advanced (empty: <user config dir>/jisr/audit-seen; "none" to keep none) (env JISR_AUDIT_SEEN_DIR)`)
	cmd.Flags().BoolVar(&o.strict, "strict", false, "also fail on messages on the audit subjects that are not records")
	cmd.Flags().StringVar(&o.keysDir, "keys", "", "directory of the logs' trusted public keys, <instance>.pub (default <certs>/audit)")
	cmd.Flags().StringVar(&o.file, "file", "", "verify an export file instead of the live streams")
	cmd.Flags().BoolVarP(&o.quiet, "quiet", "q", false, "no progress on stderr")
	return cmd
}

// verifyOptions are the flags of `jisr audit verify`.
type verifyOptions struct {
	keysDir, file, seenDir string
	trusted                []string
	quiet, strict          bool
}

func (o *verifyOptions) run(ctx context.Context, g *process.Env, stdout, stderr io.Writer) error {
	fed, err := g.Federation()
	if err != nil {
		return err
	}
	if o.keysDir == "" {
		o.keysDir = process.AuditKeyDir(g.CertsDir)
	}
	return auditor.Check(ctx, auditor.CheckConfig{
		TrustDomain: fed.TrustDomain.Name(), KeysDir: o.keysDir, Trusted: o.trusted, File: o.file,
		SeenDir: o.seenDir, Strict: o.strict, Progress: newProgress(stderr, o.quiet),
		Open: func(ctx context.Context) (*auditor.Streams, func(), error) { return process.AuditorStreams(ctx, g) },
	}, stdout)
}

// verifyProgress shows how far verification is, with the services' progress bar
// (a redrawn bar on a terminal, a few lines elsewhere).
type verifyProgress struct {
	w   io.Writer
	bar *barpkg.Bar
	n   int
	tot int
}

func newProgress(w io.Writer, quiet bool) *verifyProgress {
	if quiet {
		w = io.Discard
	}
	return &verifyProgress{w: w}
}

func (p *verifyProgress) Start(what string, total uint64) {
	p.Done()
	p.bar, p.n, p.tot = barpkg.New(p.w, "verifying "+what), 0, int(total)
	p.bar.Update(0, p.tot)
}

func (p *verifyProgress) Add(k int) {
	p.n += k
	p.bar.Update(min(p.n, p.tot), p.tot)
}

func (p *verifyProgress) Done() {
	if p.bar != nil {
		p.bar.Update(p.tot, p.tot)
		p.bar.Done()
		p.bar = nil
	}
}

func newAuditKeysCmd(g *process.Env) *cobra.Command {
	return &cobra.Command{
		Use:   "keys",
		Short: "Print the audit logs' public checkpoint keys (to publish to auditors and citizens)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keys, err := checkpoint.LoadPublicKeys(process.AuditKeyDir(g.CertsDir))
			if err != nil {
				return err
			}
			for _, k := range keys.VerifierKeys() {
				fmt.Fprintln(cmd.OutOrStdout(), k)
			}
			return nil
		},
	}
}
