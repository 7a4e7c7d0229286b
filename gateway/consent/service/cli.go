package service

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/gateway/consent"
)

// WriteGrants writes a citizen's grants as `jisr consent list` shows them:
// a table (with each one's state at now), or JSON.
func WriteGrants(w io.Writer, fed *federation.Federation, gs []consent.Grant, asJSON bool, now time.Time) error {
	if asJSON {
		b, _ := json.MarshalIndent(gs, "", "  ")
		_, err := fmt.Fprintln(w, string(b))
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JTI\tTO\tSERVICE\tMETHODS\tPURPOSE\tBASIS\tEXPIRES\tSTATE")
	for _, c := range gs {
		state := "active"
		switch {
		case c.Revoked:
			state = "revoked"
		case now.After(c.Expires):
			state = "expired"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, consent.ConsumerName(fed, c.Consumer), c.Service,
			strings.Join(c.Methods, ","), c.Purpose, c.LegalBasis, c.Expires.Format(time.RFC3339), state)
	}
	return tw.Flush()
}

// WriteRevoked says what `jisr consent revoke` revoked: the grant, or that
// none was recorded for jti.
func WriteRevoked(w io.Writer, fed *federation.Federation, jti string, gr *consent.Grant) {
	if gr == nil {
		fmt.Fprintf(w, "revoked %s (no grant recorded: a token minted --offline or outside the consent service)\n", jti)
		return
	}
	fmt.Fprintf(w, "revoked %s (%s → %s %v, purpose %s)\n", gr.ID, consent.ConsumerName(fed, gr.Consumer), gr.Service, gr.Methods, gr.Purpose)
}

// InspectToken reads a token as a gateway does: its claims go to out as
// JSON when the signature verifies, and the refusal reason, if any, is the
// error; a line on how long it is valid goes to info.
func InspectToken(keys *consent.KeySet, tok string, now time.Time, out, info io.Writer) error {
	c, verr := consent.Inspect(keys, tok, now)
	if c == nil {
		return fmt.Errorf("invalid token: %w", verr)
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	fmt.Fprintln(out, string(b))
	if verr != nil {
		return fmt.Errorf("signature valid, but: %w", verr)
	}
	fmt.Fprintf(info, "signature valid, valid until %s\n", c.Expires().Format(time.RFC3339))
	return nil
}
