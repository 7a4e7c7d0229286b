package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/consent/service"
	"github.com/jisr-bus/jisr/gateway/node"
)

func newConsentServeCmd(g *process.Env) *cobra.Command {
	var o process.ConsentOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the consent service: the only holder of the signing keys",
		Long: `Run the consent service under its own identity (spiffe://<td>/consent). It
loads the signing keys from <certs>/consent/ (a key file open to group or
other users is refused), writes the public keys to <certs>/consent-jwks.json
for the gateways (rewritten every minute), and answers the citizen-facing
consent API that gateways forward over NATS (jisr.consent.grant, .list,
.revoke). Gateways never hold the signing keys.

It also stores the transitions nobody asks for — a consent whose time
passed (EXPIRED), whose last permitted use was taken (USED_UP) — and writes
each to its own audit log (jisr.audit.consent, checkpoint key
<certs>/audit/consent.pub): one replica at a time, the holder of a lease.

It follows the signed federation versions (jisr federation publish) as the
gateway does: it applies the published version before it answers, then
every newer one without a restart — a member a version adds can be granted
consent, a rule it removes lets no consent request be approved. A version
with a bad signature, or older than the one in force, is refused and
logged. It does not start without the jisr_federation bucket.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := process.StartConsentService(cmd.Context(), g, o)
			if err != nil {
				return err
			}
			<-cmd.Context().Done()
			n.Stop()
			return nil
		},
	}
	cmd.Flags().StringVar(&o.GovernancePub, "governance-pub", "", "the governance public key the signed federation versions are verified with (default <certs>/governance/governance.pub)")
	cmd.Flags().StringVar(&o.AuditAPIPrefix, "audit-api-prefix", "", `where the audit streams' JetStream API is seen when the NATS server keeps them in their own account ("$JS.AUDIT.API" with jisr nats-config --audit-account; see docs/audit.md)`)
	return cmd
}

func newConsentCmd(g *process.Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "consent",
		Short: "Grant, inspect, list and revoke citizens' consent tokens",
		Long: `A consent token is a JWS (EdDSA) issued by the consent service after the
citizen authenticated: it lets one member call some methods of one service,
for one purpose, about one citizen, until it expires (docs/consent-tokens.md).

grant and revoke ask the RUNNING consent service (jisr consent serve), as the
operator (spiffe://<td>/operator, its SVID in --certs, over --nats): the
consent service writes each one to its audit log (jisr.audit.consent) before
it is done, and refuses it when the record cannot be made durable. With no
consent service answering, they fail and change nothing. list and inspect
read as the consent service (its SVID and public keys in --certs).`,
	}
	cmd.AddCommand(newConsentServeCmd(g), newConsentGrantCmd(g), newConsentInspectCmd(g), newConsentRevokeCmd(g), newConsentListCmd(g), newConsentRotateCmd(g))
	return cmd
}

func newConsentGrantCmd(g *process.Env) *cobra.Command {
	var citizen string
	var req consent.GrantRequest
	var offline, force bool
	cmd := &cobra.Command{
		Use:   "grant --citizen EID --to MEMBER --service SVC --methods M[,M] --purpose P",
		Short: "Mint a consent token (prints it on stdout)",
		Long: `Mint a consent token for one citizen, after checking the grant against the
federation file's access rules: the consumer (--to) must be allowed the
service by a rule that needs a token, with every method (--methods) and the
purpose (--purpose) of that rule; --basis defaults to that rule's legal basis
and must match it when given. A grant no rule allows is refused (the gateway
would refuse every query it covers); --force mints it anyway.

The running consent service mints, records and audits the grant (its audit
log, jisr.audit.consent, method OperatorGrant): the token is printed only once
its record is durable. With no consent service running the command fails and
mints nothing. --offline mints here with the signing key in --certs: the grant
is then NOT recorded and NOT audited (a test's or a disaster's escape; only a
holder of the consent service's signing key can do it).`,
		Example: `  jisr consent grant --citizen BK482913 --to cnss \
    --service jisr.civilregistry.v1.CivilRegistry --methods GetPerson,IsAlive \
    --fields person.names,person.birth --purpose amo-enrolment --ttl 24h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fed, err := g.Federation()
			if err != nil {
				return err
			}
			if citizen == "" || req.To == "" || req.Service == "" || len(req.Methods) == 0 || req.Purpose == "" {
				return process.UsageError{Err: errors.New("--citizen, --to, --service, --methods and --purpose are required")}
			}
			eid, err := fed.NormaliseEID(citizen)
			if err != nil {
				return process.UsageError{Err: fmt.Errorf("--citizen: %w (%s)", err, fed.EID)}
			}
			if force {
				if req.LegalBasis == "" {
					req.LegalBasis = "consent"
				}
			} else if _, err := checkGrant(fed, &req, cmd.Flags().Changed("basis")); err != nil {
				return process.UsageError{Err: err}
			}
			keyer, err := g.Keyer()
			if err != nil {
				return err
			}
			var resp *consent.GrantResponse
			if offline {
				svc, done, err := g.ConsentService(cmd.Context(), true)
				if err != nil {
					return err
				}
				defer done()
				fmt.Fprintln(cmd.ErrOrStderr(), "--offline: this grant is NOT recorded and NOT audited")
				resp, err = svc.Grant(cmd.Context(), keyer.CKey(eid), req)
			} else {
				var op *consent.OperatorClient
				var done func()
				if op, done, err = operatorConsentClient(cmd.Context(), g); err != nil {
					return err
				}
				defer done()
				resp, err = op.Grant(cmd.Context(), keyer.CKey(eid), req)
			}
			if errors.Is(err, consent.ErrBadRequest) {
				return process.UsageError{Err: err}
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), resp.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "jti %s, expires %s\n", resp.ID, resp.Expires.Format(time.RFC3339))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&citizen, "citizen", "", "the citizen's eID (used only to derive their ckey)")
	f.StringVar(&req.To, "to", "", "the consumer member the citizen consents to")
	f.StringVar(&req.Service, "service", "", "full protobuf service name, e.g. jisr.civilregistry.v1.CivilRegistry")
	f.StringSliceVar(&req.Methods, "methods", nil, "methods covered, comma-separated")
	f.StringSliceVar(&req.Fields, "fields", nil, "reply field paths released (default: all the access rule allows)")
	f.StringVar(&req.Purpose, "purpose", "", "the purpose consented to (must match the access rule's)")
	f.StringVar(&req.TTL, "ttl", "24h", "lifetime, at most 2160h (90 days)")
	f.IntVar(&req.MaxUses, "max-uses", 0, "number of queries allowed (0: unlimited until expiry)")
	f.StringVar(&req.LegalBasis, "basis", "", "legal basis: consent or explicit_request (default: the legal basis of the access rule the grant matches)")
	f.BoolVar(&force, "force", false, "mint even when no access rule of the federation file allows this grant (tests of refusals)")
	f.BoolVar(&offline, "offline", false, "mint here with the signing key, without the consent service: NOT recorded, NOT audited (it cannot be listed; `jisr consent revoke <jti>` still revokes it)")
	return cmd
}

func newConsentInspectCmd(g *process.Env) *cobra.Command {
	var jwks string
	var offline bool
	cmd := &cobra.Command{
		Use:   "inspect TOKEN",
		Short: "Decode a consent token and verify it offline, as a gateway reads it",
		Long: `Decode a consent token and verify it with the consent service's public keys
(--jwks, default <certs>/consent-jwks.json), reading it exactly as a gateway
does: the refusal reason is printed for a token a gateway would refuse.
Revocation is then checked in the running federation (--nats, as the consent
service); when it cannot connect, or with --offline, it says plainly that
revocation was not checked. max_uses is not checked.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			keys, _, err := process.GatewayConsentKeys(g, jwks)
			if err != nil {
				return err
			}
			tok := strings.TrimSpace(args[0])
			if tok == "-" {
				b, _ := os.ReadFile("/dev/stdin")
				tok = strings.TrimSpace(string(b))
			}
			if err := service.InspectToken(keys, tok, time.Now(), cmd.OutOrStdout(), cmd.ErrOrStderr()); err != nil {
				return err
			}
			return checkRevocation(cmd, g, keys, tok, offline)
		},
	}
	cmd.Flags().StringVar(&jwks, "jwks", "", "the consent service's public JWKS (default <certs>/consent-jwks.json)")
	cmd.Flags().BoolVar(&offline, "offline", false, "do not connect to the federation: revocation is then not checked")
	return cmd
}

// checkRevocation looks the token's jti up in the running federation's
// revocations (as the consent service, over --nats), or says plainly that
// it could not: a token that verifies offline may still be revoked.
func checkRevocation(cmd *cobra.Command, g *process.Env, keys *consent.KeySet, tok string, offline bool) error {
	const notChecked = "revocation: NOT checked (%s); a gateway also checks revocation and max_uses on every query"
	if offline {
		fmt.Fprintf(cmd.ErrOrStderr(), notChecked+"\n", "--offline")
		return nil
	}
	c, err := consent.Inspect(keys, tok, time.Now())
	if err != nil || c == nil {
		return nil // InspectToken has said what is wrong
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
	defer cancel()
	svc, done, err := g.ConsentService(ctx, false)
	if err != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), notChecked+"\n", "could not reach the federation: "+err.Error())
		return nil
	}
	defer done()
	revoked, err := svc.Store.RevokedInBucket(ctx, c.ID)
	switch {
	case err != nil:
		fmt.Fprintf(cmd.ErrOrStderr(), notChecked+"\n", err.Error())
	case revoked:
		return fmt.Errorf("the token is REVOKED (jti %s): a gateway refuses it with CONSENT_REVOKED", c.ID)
	default:
		fmt.Fprintf(cmd.ErrOrStderr(), "revocation: checked at %s, not revoked\n", g.NATSURL)
	}
	return nil
}

func newConsentRevokeCmd(g *process.Env) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke JTI",
		Short: "Revoke a consent: every gateway refuses its token within a second",
		Long: `Revoke the token with this ID (jti), whoever minted it: the revocation is
written even when no grant is recorded (a token minted with --offline, or by
another holder of the signing key). A jti is 16 to 64 characters of
A-Z a-z 0-9 _ -.

The running consent service does it, asked as the operator: it writes the
revocation to its audit log (jisr.audit.consent, method OperatorRevoke) first,
and revokes nothing when the record cannot be made durable. With no consent
service running the command fails and changes nothing.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !consent.CheckID(args[0]) {
				return process.UsageError{Err: consent.ErrBadID}
			}
			fed, err := g.Federation()
			if err != nil {
				return err
			}
			op, done, err := operatorConsentClient(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer done()
			gr, err := op.Revoke(cmd.Context(), args[0])
			if errors.Is(err, consent.ErrBadID) {
				return process.UsageError{Err: err}
			}
			if err != nil {
				return err
			}
			service.WriteRevoked(cmd.OutOrStdout(), fed, args[0], gr)
			return nil
		},
	}
}

// operatorConsentClient connects as the operator to ask the running consent
// service's operator API (audited there).
func operatorConsentClient(ctx context.Context, g *process.Env) (*consent.OperatorClient, func(), error) {
	nc, src, err := g.Connect(ctx, subject.Operator, nats.MaxReconnects(0))
	if err != nil {
		return nil, nil, fmt.Errorf("%w (grants and revocations are asked of the running consent service, as the operator)", err)
	}
	return consent.NewOperatorClient(nc), func() { _ = nc.Drain(); src.Close() }, nil
}

func newConsentListCmd(g *process.Env) *cobra.Command {
	var citizen string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list --citizen EID",
		Short: "List a citizen's consents",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fed, err := g.Federation()
			if err != nil {
				return err
			}
			eid, err := fed.NormaliseEID(citizen)
			if err != nil {
				return process.UsageError{Err: fmt.Errorf("--citizen: %w", err)}
			}
			keyer, err := g.Keyer()
			if err != nil {
				return err
			}
			svc, done, err := g.ConsentService(cmd.Context(), false)
			if err != nil {
				return err
			}
			defer done()
			gs, err := svc.Store.List(cmd.Context(), keyer.CKey(eid))
			if err != nil {
				return err
			}
			return service.WriteGrants(cmd.OutOrStdout(), fed, gs, asJSON, time.Now())
		},
	}
	cmd.Flags().StringVar(&citizen, "citizen", "", "the citizen's eID")
	cmd.Flags().BoolVar(&asJSON, "json", false, "JSON output")
	return cmd
}

func newConsentRotateCmd(g *process.Env) *cobra.Command {
	return &cobra.Command{
		Use:   "rotate-key",
		Short: "Add a new signing key; tokens signed with older keys keep verifying until they expire",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := consent.RotateKey(g.CertsDir, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "new signing key %s; public keys written to %s (gateways reload it within %s; a running consent service signs with the new key after a restart); old keys verify for %s more\n",
				k.ID, consent.JWKSPath(g.CertsDir), node.JWKSReload, consent.MaxTTL)
			return nil
		},
	}
}
