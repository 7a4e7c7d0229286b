package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/cmd/internal/process"
)

// A context, like the nats CLI's, names a federation to talk to: its NATS
// URL, the directory of certificates (SVIDs, keys) and the federation
// file, so they need not be retyped. One is current (`jisr context use`),
// or JISR_CONTEXT names one for a shell. A flag or its JISR_* variable
// still wins over the context.
type jisrContext struct {
	NATS       string `json:"nats"`
	Certs      string `json:"certs"`
	Federation string `json:"federation"`
}

// contextDir is where contexts are kept: $JISR_CONTEXT_DIR, else
// <user config dir>/jisr/contexts (~/.config/jisr/contexts).
func contextDir() (string, error) {
	if d := os.Getenv("JISR_CONTEXT_DIR"); d != "" {
		return d, nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("context: %w (set JISR_CONTEXT_DIR)", err)
	}
	return filepath.Join(d, "jisr", "contexts"), nil
}

func contextPath(name string) (string, error) {
	if err := federation.CheckName(name); err != nil {
		return "", process.UsageError{Err: fmt.Errorf("context name %q: %v", name, err)}
	}
	d, err := contextDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, name+".json"), nil
}

func loadContext(name string) (*jisrContext, error) {
	p, err := contextPath(name)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, process.UsageError{Err: fmt.Errorf("no context %q (`jisr context list` shows them; `jisr context save %s` makes it)", name, name)}
	}
	if err != nil {
		return nil, err
	}
	var c jisrContext
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("context %s (%s): %w", name, p, err)
	}
	return &c, nil
}

// currentContext is the context in force: $JISR_CONTEXT, else the one
// `jisr context use` chose, else none ("").
func currentContext() (string, error) {
	if n := os.Getenv("JISR_CONTEXT"); n != "" {
		return n, nil
	}
	d, err := contextDir()
	if err != nil {
		return "", nil //nolint:nilerr // no config directory: no context
	}
	b, err := os.ReadFile(filepath.Join(d, "current"))
	if err != nil {
		return "", nil //nolint:nilerr // none chosen
	}
	return strings.TrimSpace(string(b)), nil
}

// applyContext fills the global flags the user did not set (by flag or by
// their JISR_* variable) from the current context.
func applyContext(cmd *cobra.Command, g *process.Env) error {
	name, err := currentContext()
	if err != nil || name == "" {
		return err
	}
	c, err := loadContext(name)
	if err != nil {
		return err
	}
	flags := cmd.Flags()
	for _, f := range []struct {
		flag, env, value string
		into             *string
	}{
		{"nats", "JISR_NATS", c.NATS, &g.NATSURL},
		{"certs", "JISR_CERTS", c.Certs, &g.CertsDir},
		{"federation", "JISR_FEDERATION", c.Federation, &g.FederationPath},
	} {
		if f.value == "" || os.Getenv(f.env) != "" {
			continue
		}
		if fl := flags.Lookup(f.flag); fl != nil && fl.Changed {
			continue
		}
		*f.into = f.value
	}
	return nil
}

func newContextCmd(g *process.Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "context",
		Short: "Save and choose the federation to talk to (NATS URL, certificates, federation file)",
		Long: `A context names a federation: its NATS URL, the directory of certificates and
keys, and the federation file. Every command reads the current context for the
global flags it is not given (a flag or its JISR_* variable still wins).

The current context is the one 'jisr context use' chose, or $JISR_CONTEXT for
one shell. Contexts are kept in $JISR_CONTEXT_DIR, default
<user config dir>/jisr/contexts (~/.config/jisr/contexts).`,
		Example: `  jisr context save dev          # the values in force now (make run's defaults), made absolute
  jisr context save prod --nats tls://nats.gov.ma:4222 --certs /etc/jisr/certs --federation /etc/jisr/federation.yaml
  jisr context use dev
  JISR_CONTEXT=prod jisr audit tail`,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "save NAME",
		Short: "Save the NATS URL, certificates and federation file in force as context NAME",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := contextPath(args[0])
			if err != nil {
				return err
			}
			c := jisrContext{NATS: g.NATSURL, Certs: abs(g.CertsDir), Federation: abs(g.FederationPath)}
			b, _ := json.MarshalIndent(c, "", "  ")
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				return err
			}
			if err := os.WriteFile(p, append(b, '\n'), 0o600); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "saved context %s: nats %s, certs %s, federation %s\n", args[0], c.NATS, c.Certs, c.Federation)
			return nil
		},
	}, &cobra.Command{
		Use:   "use NAME",
		Short: "Make NAME the current context",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := loadContext(args[0]); err != nil {
				return err
			}
			d, err := contextDir()
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(d, "current"), []byte(args[0]+"\n"), 0o600); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "using context %s\n", args[0])
			return nil
		},
	}, &cobra.Command{
		Use:   "list",
		Short: "List the saved contexts; * marks the current one",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := contextDir()
			if err != nil {
				return err
			}
			cur, _ := currentContext()
			names, _ := filepath.Glob(filepath.Join(d, "*.json"))
			sort.Strings(names)
			for _, p := range names {
				n := strings.TrimSuffix(filepath.Base(p), ".json")
				mark := " "
				if n == cur {
					mark = "*"
				}
				c, err := loadContext(n)
				if err != nil {
					fmt.Fprintf(cmd.OutOrStdout(), "%s %s  (unreadable: %v)\n", mark, n, err)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %-12s %s  certs %s  federation %s\n", mark, n, c.NATS, c.Certs, c.Federation)
			}
			return nil
		},
	}, &cobra.Command{
		Use:   "show",
		Short: "Show the values in force (after flags, JISR_* variables and the current context)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cur, _ := currentContext()
			if cur == "" {
				cur = "(none)"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "context    %s\nnats       %s\ncerts      %s\nfederation %s\n", cur, g.NATSURL, g.CertsDir, g.FederationPath)
			return nil
		},
	})
	return cmd
}

func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// compactGlobalFlags shows the global flags on one line in every
// subcommand's help (their descriptions are in `jisr --help`).
func compactGlobalFlags(root *cobra.Command) {
	cobra.AddTemplateFunc("jisrGlobalFlags", func(fs *pflag.FlagSet) string {
		var names []string
		fs.VisitAll(func(f *pflag.Flag) {
			if !f.Hidden {
				names = append(names, "--"+f.Name)
			}
		})
		return strings.Join(names, " ")
	})
	const block = "Global Flags:\n{{.InheritedFlags.FlagUsages | trimTrailingWhitespaces}}"
	t := root.UsageTemplate()
	if strings.Contains(t, block) {
		root.SetUsageTemplate(strings.Replace(t, block,
			"Global flags (described in 'jisr --help'; a context fills them: 'jisr context'):\n  {{jisrGlobalFlags .InheritedFlags}}", 1))
	}
}
