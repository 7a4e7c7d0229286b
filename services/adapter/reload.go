package adapter

import (
	"fmt"
	"slices"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/jisr-bus/jisr/bus/catalog"
	"github.com/jisr-bus/jisr/bus/descset"
	"github.com/jisr-bus/jisr/bus/federation"
)

// fedState is one federation version as the adapter applies it: its
// member, the catalogue and what the member may call, swapped whole.
type fedState struct {
	fed     *federation.Federation
	version uint64 // 0: the federation file the adapter started with
	member  *federation.Member
	cat     *catalog.Catalog
}

// SetFederation applies a new federation version without a restart, as the
// gateway does (gateway/reload.go): the catalogue is rebuilt and checked
// first (a version that names a service without a descriptor, a rule with
// an unknown method or field, or that drops this member, is refused and the
// running one stays), then it is swapped at once. From then on:
//
//   - the consumer side serves the methods of the new version, those of a
//     service added by it included (through the unknown-service handler: a
//     gRPC server cannot register a service once it serves), and refuses
//     those it removed; its reflection shows what the member may call now;
//   - the provider side answers only for the services the member provides
//     in the new version, and its catalogue entry (NATS micro) is
//     registered again when they changed.
//
// The gateway decides every query under its own version; the adapter's
// version only shapes what its member is offered. The trust domain and the
// member's identity cannot change at run time. sets are the version's
// descriptor sets (its bundle's), checked against the digests fed names.
func (a *Adapter) SetFederation(fed *federation.Federation, version uint64, sets map[string][]byte) error {
	old := a.fs.Load()
	if fed.TrustDomain != old.fed.TrustDomain {
		return fmt.Errorf("adapter: the trust domain cannot change at run time (%s → %s)", old.fed.TrustDomain, fed.TrustDomain)
	}
	if version <= old.version {
		return fmt.Errorf("adapter: federation version %d is not newer than %d", version, old.version)
	}
	m, err := fed.Member(a.cfg.Member)
	if err != nil {
		return fmt.Errorf("adapter: version %d has no member %q: this adapter keeps the running version (stop it if the member left)", version, a.cfg.Member)
	}
	svcs, err := descset.Services(fed, sets, a.cfg.Services)
	if err != nil {
		return err
	}
	cat, err := catalog.New(fed, svcs)
	if err != nil {
		return err
	}
	st := &fedState{fed: fed, version: version, member: m, cat: cat}
	a.fs.Store(st)
	for _, sd := range cat.Services() {
		a.health.SetServingStatus(string(sd.FullName()), healthpb.HealthCheckResponse_SERVING)
	}
	if !slices.Equal(old.member.Provides, m.Provides) {
		if err := a.register(st, false); err != nil {
			// The queries keep flowing (they do not go through the
			// catalogue entry); only `jisr services --live` is stale.
			a.log.Error("catalogue entry not registered again", "version", version, "err", err)
		}
	}
	a.log.Info("federation version applied", "version", version, "services", len(cat.Services()), "callable", len(catalog.Callable(fed, a.cfg.Member)))
	return nil
}

// Provides is what the member provides in the federation version in force.
func (a *Adapter) Provides() []string { return a.fs.Load().member.Provides }

// Providing reports whether the provider side runs (StartProvider).
func (a *Adapter) Providing() bool {
	a.microMu.Lock()
	defer a.microMu.Unlock()
	return a.providing
}

// FederationVersion is the version of the federation in force (0: the file
// the adapter started with).
func (a *Adapter) FederationVersion() uint64 { return a.fs.Load().version }

// register announces the provider side's catalogue entry for st (start:
// from StartProvider), or announces it again once the provider side runs.
func (a *Adapter) register(st *fedState, start bool) error {
	a.microMu.Lock()
	defer a.microMu.Unlock()
	if start {
		a.providing = true
	}
	if !a.providing {
		return nil
	}
	if a.micro != nil {
		_ = a.micro.Stop()
		a.micro = nil
	}
	if len(st.member.Provides) == 0 {
		return nil
	}
	svc, err := st.cat.Register(a.cfg.Conn, st.fed, a.cfg.Member)
	if err != nil {
		return err
	}
	a.micro = svc
	return nil
}

// laterMethod serves, on the consumer side, a method the gRPC server was not
// built with: one of a service a later federation version added. Any other
// is refused as unknown.
func (a *Adapter) laterMethod(_ any, stream grpc.ServerStream) error {
	full, ok := grpc.MethodFromServerStream(stream)
	if !ok {
		return unknownMethod(nil, stream)
	}
	m, err := a.fs.Load().cat.ByFullMethod(full)
	if err != nil {
		return unknownMethod(nil, stream)
	}
	c := new(consumerCall)
	if err := stream.RecvMsg(&c.in); err != nil {
		return err
	}
	out, err := a.consume(stream.Context(), m, c)
	if err != nil {
		return err
	}
	return stream.SendMsg(out)
}
