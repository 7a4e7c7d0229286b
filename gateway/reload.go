package gateway

import (
	"fmt"

	"github.com/jisr-bus/jisr/bus/catalog"
	"github.com/jisr-bus/jisr/bus/descset"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/gateway/policy"
)

// fedState is one federation version as the gateway applies it: members,
// catalogue, access rules and fair shares, swapped whole.
type fedState struct {
	fed     *federation.Federation
	version uint64 // 0: the federation file the gateway started with
	cat     *catalog.Catalog
	pol     *policy.Policy
	shares  map[string]*share // member name → its fair share
}

// SetFederation applies a new federation version without a restart: the
// catalogue is rebuilt and checked first (a version that names a service
// without a descriptor, or a rule with an unknown method or field, is
// refused and the running one stays), then members, rules and fair shares
// are swapped at once; a query already being decided finishes under the
// version that admitted it. A member whose limits did not change keeps its
// share (its queries in flight and its rate). The trust domain cannot change.
// sets are the version's descriptor sets (its bundle's): the services of
// every member (bus/descset), checked against the digests fed names.
func (g *Gateway) SetFederation(fed *federation.Federation, version uint64, sets map[string][]byte) error {
	old := g.fs.Load()
	if fed.TrustDomain != old.fed.TrustDomain {
		return fmt.Errorf("gateway: the trust domain cannot change at run time (%s → %s)", old.fed.TrustDomain, fed.TrustDomain)
	}
	if version <= old.version {
		return fmt.Errorf("gateway: federation version %d is not newer than %d", version, old.version)
	}
	svcs, err := descset.Services(fed, sets, g.cfg.Services)
	if err != nil {
		return err
	}
	cat, err := catalog.New(fed, svcs)
	if err != nil {
		return err
	}
	shares := newShares(fed)
	for name, sh := range shares {
		if prev := old.shares[name]; prev != nil && prev.limits == sh.limits {
			shares[name] = prev
		}
	}
	g.fs.Store(&fedState{fed: fed, version: version, cat: cat, pol: policy.New(fed), shares: shares})
	g.log.Info("federation version applied", "version", version, "members", len(fed.Members), "rules", len(fed.Rules))
	return nil
}

// FederationVersion is the version of the federation in force (0: the file
// the gateway started with).
func (g *Gateway) FederationVersion() uint64 { return g.fs.Load().version }
