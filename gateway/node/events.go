package node

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

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
	js, err := jetstream.New(n.cfg.Conn)
	if err != nil {
		return err
	}
	if err := natsstate.CheckEventStreams(ctx, js, n.cfg.Federation); err != nil {
		return fmt.Errorf("events: %w", err)
	}
	cfg := events.Config{
		Federation: n.cfg.Federation, Keyer: n.cfg.Keyer, Conn: n.cfg.Conn, Audit: n.audit.Log, Log: n.cfg.Log,
	}
	if n.consent != nil {
		cfg.Consents = consent.EventConsents{Store: n.consent.Store, Federation: n.cfg.Federation}
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

// Events is the node's events service (nil when audit is skipped).
func (n *Node) Events() *events.Events { return n.events }
