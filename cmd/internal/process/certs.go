package process

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/jisr-bus/jisr/bus/ckey"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/certs/devca"
	"github.com/jisr-bus/jisr/gateway/consent"
)

// InitCerts creates whatever of the dev PKI and keys is missing.
func InitCerts(g *Env, fed *federation.Federation) (*devca.InitResult, error) {
	// The audit account's operator (jisr nats init --audit-account) too.
	res, err := devca.Init(g.CertsDir, fed.TrustDomain, append(fed.Identities(), fed.ID(natsconf.AuditOperator)))
	if err != nil {
		return nil, err
	}
	keyPath := CitizenKeyPath(g.CertsDir)
	if _, err := os.Stat(keyPath); errors.Is(err, fs.ErrNotExist) {
		if err := ckey.Generate(keyPath); err != nil {
			return nil, fmt.Errorf("citizen key: %w", err)
		}
	} else if err != nil {
		return nil, err
	}
	if err := consent.InitKeys(g.CertsDir); err != nil {
		return nil, fmt.Errorf("consent keys: %w", err)
	}
	// The governance key signs the federation's versions (jisr federation sign).
	if err := federation.InitGovernanceKey(g.CertsDir); err != nil {
		return nil, fmt.Errorf("governance key: %w", err)
	}
	return res, nil
}
