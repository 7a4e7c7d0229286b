package main

import (
	"bytes"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/cmd/internal/process"
)

func newFederationCmd(g *process.Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "federation",
		Short: "Signed, versioned federation: sign, publish, diff, history",
		Long: `The federation file is published as a signed bundle with a version number, like
X-Road's signed global configuration. The governance key ('jisr certs init'
writes a dev one under <certs>/governance/) signs it; the operator publishes it
into the key-value bucket jisr_federation ('jisr nats init' creates it), which
keeps the last 64 versions. A bundle whose signature does not verify with the
governance public key, or that is not newer than the published version, is
refused.`,
		Example: `  jisr federation sign --version 2 -o federation-v2.json
  jisr federation diff federation-v2.json
  jisr federation publish federation-v2.json
  jisr federation history`,
	}
	cmd.AddCommand(newFederationSignCmd(g), newFederationPublishCmd(g), newFederationDiffCmd(g), newFederationHistoryCmd(g))
	return cmd
}

func newFederationSignCmd(g *process.Env) *cobra.Command {
	var (
		version  uint64
		key, out string
	)
	cmd := &cobra.Command{
		Use:   "sign --version N -o BUNDLE",
		Short: "Sign the federation file (--federation) as version N with the governance key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if version == 0 || out == "" {
				return process.UsageError{Err: fmt.Errorf("--version (at least 1) and -o are required")}
			}
			if key == "" {
				key = federation.GovernanceKeyPath(g.CertsDir)
			}
			b, err := process.SignFederation(g, version, key, out)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "signed %s as version %d (%s) into %s\n", g.FederationPath, b.Version, b.Digest(), out)
			return nil
		},
	}
	cmd.Flags().Uint64Var(&version, "version", 0, "the version number: greater than the published one")
	cmd.Flags().StringVar(&key, "key", "", "the governance private key (default <certs>/governance/governance.key)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "where to write the signed bundle")
	return cmd
}

func newFederationPublishCmd(g *process.Env) *cobra.Command {
	return &cobra.Command{
		Use:   "publish BUNDLE",
		Short: "Verify a signed bundle and publish it, as the operator, for every component to take",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			b, err := process.PublishFederation(cmd.Context(), g, raw)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "published federation version %d (%s)\n", b.Version, b.Digest())
			return nil
		},
	}
}

func newFederationDiffCmd(g *process.Env) *cobra.Command {
	return &cobra.Command{
		Use:   "diff [OLD] [NEW]",
		Short: "What changes between two federations (bundles or YAML files; default: the published version and --federation)",
		Long: `Compare two federations: each argument is a signed bundle (its signature is
checked) or a federation YAML file. With one argument, the published version is
compared with it; with none, the published version with --federation.`,
		Args: cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			trusted, err := process.TrustedGovernanceKeys(g)
			if err != nil {
				return err
			}
			load := func(p string) (*federation.Federation, error) {
				raw, err := os.ReadFile(p)
				if err != nil {
					return nil, err
				}
				if bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
					_, fed, err := federation.Verify(raw, trusted, 0)
					return fed, err
				}
				return federation.Parse(raw)
			}
			var a, b *federation.Federation
			if len(args) < 2 {
				kv, done, err := process.FederationBucket(cmd.Context(), g, subject.Operator)
				if err != nil {
					return err
				}
				defer done()
				_, pub, _, err := process.Published(cmd.Context(), kv, trusted)
				if err != nil {
					return err
				}
				if pub == nil {
					return fmt.Errorf("no federation version published yet")
				}
				a = pub
				newPath := g.FederationPath
				if len(args) == 1 {
					newPath = args[0]
				}
				if b, err = load(newPath); err != nil {
					return err
				}
			} else {
				if a, err = load(args[0]); err != nil {
					return err
				}
				if b, err = load(args[1]); err != nil {
					return err
				}
			}
			lines := federation.Diff(a, b)
			if len(lines) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no change")
			}
			for _, l := range lines {
				fmt.Fprintln(cmd.OutOrStdout(), l)
			}
			return nil
		},
	}
}

func newFederationHistoryCmd(g *process.Env) *cobra.Command {
	return &cobra.Command{
		Use:   "history",
		Short: "Every federation version kept in the bucket, with whether its signature verifies",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return process.FederationHistory(cmd.Context(), g, cmd.OutOrStdout())
		},
	}
}
