package main

import (
	"fmt"

	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/spf13/cobra"
)

func newCertsCmd(g *process.Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Development PKI: a dev CA, SVIDs and the federation's keys",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "init",
		Short: "Create the dev CA and an X.509-SVID for every identity of the federation",
		Long: `Create (or complete) the development PKI in --certs:

  ca.pem, ca.key, bundle.pem     the dev CA of the federation's trust domain
  svid/<name>.pem, .key          an X.509-SVID per identity: the NATS server, the
                                 gateway, the consent service, the auditor, the
                                 operator (jisr nats init: creates the streams
                                 and buckets) and spiffe://<td>/member/<name>
                                 for every member
  citizen.key                    the federation's secret for citizen keys (ckeys)
  consent/<time>-<kid>.key       the consent service's Ed25519 signing key(s)

It is idempotent: existing files are kept; SVIDs that are missing, expired or
close to expiry are reissued (running processes pick them up without restart).
In production, SVIDs come from SPIRE through the Workload API
(SPIFFE_ENDPOINT_SOCKET) and this command is not used.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fed, err := g.Federation()
			if err != nil {
				return err
			}
			res, err := process.InitCerts(g, fed)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\n", res)
			return nil
		},
	})
	return cmd
}
