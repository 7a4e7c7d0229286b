package node

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/events"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

// startEvents starts the life events' side of the gateway (docs/events.md)
// once the audit log is open: it refuses to start when an event stream is
// missing or rewritable (run `jisr nats init`), never creating one.
func (n *Node) startEvents(ctx context.Context) error {
	if n.audit == nil { // benchmark mode without audit: no events either
		return nil
	}
	// The version in force (the watch may have applied one already), and
	// every later one (applyFederation) from the moment the service exists.
	n.fedMu.Lock()
	defer n.fedMu.Unlock()
	js, err := jetstream.New(n.cfg.Conn)
	if err != nil {
		return err
	}
	if err := natsstate.CheckEventStreams(ctx, js, n.federation()); err != nil {
		return fmt.Errorf("events: %w", err)
	}
	cfg := events.Config{
		Federation: n.federation(), Keyer: n.cfg.Keyer, Conn: n.cfg.Conn, Audit: n.audit.Log, Log: n.cfg.Log,
		// Publications are taken on the query connections too, and the
		// stores spread over them by citizen: one connection and one
		// JetStream context's lock serialised them all.
		MoreConns: n.o.queryConns,
	}
	if n.consent != nil {
		cfg.Consents = consent.EventConsents{Store: n.consent.Store}
	}
	if n.o.tp != nil {
		cfg.TracerProvider = n.o.tp
	}
	ev, err := events.New(cfg)
	if err != nil {
		return err
	}
	if err := ev.Start(ctx); err != nil {
		return err
	}
	n.events = ev
	return nil
}

// applyFederation puts a verified federation version in force at the
// gateway and, with the same version, at the events service: its event
// rules decide the next events published (a rule it adds delivers, a rule
// it removes no longer does). A version either refuses stays out of both.
func (n *Node) applyFederation(fed *federation.Federation, version uint64, sets map[string][]byte) error {
	n.fedMu.Lock()
	defer n.fedMu.Unlock()
	if n.events != nil {
		if err := events.CheckFederation(fed); err != nil {
			return err
		}
	}
	if err := n.gw.SetFederation(fed, version, sets); err != nil {
		return err
	}
	n.fed = fed
	if n.consent != nil {
		// The citizen-facing consent API names consumers by this version.
		n.consent.Service.SetFederation(fed)
	}
	if n.events != nil {
		return n.events.SetFederation(fed) // checked above: cannot fail
	}
	return nil
}

// federation is the version in force (fedMu held).
func (n *Node) federation() *federation.Federation {
	if n.fed != nil {
		return n.fed
	}
	return n.cfg.Federation
}

// Events is the node's events service (nil when audit is skipped).
func (n *Node) Events() *events.Events { return n.events }
