package backend

import (
	"crypto/tls"
	"fmt"

	"google.golang.org/grpc"

	"github.com/jisr-bus/jisr/bus/loopback"
	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
)

// PublishEventsThrough connects a backend that publishes life events (the
// civil registry's deaths) to its adapter's jisr.events.v1.EventPublisher
// at addr: plaintext on loopback only, else tlsConf. A backend that
// publishes nothing ignores it.
func (b *Backend) PublishEventsThrough(addr string, tlsConf *tls.Config) error {
	p, ok := b.m.(interface {
		SetEventPublisher(eventsv1.EventPublisherClient)
	})
	if !ok {
		return nil
	}
	creds, err := loopback.ClientCredentials(addr, tlsConf)
	if err != nil {
		return ErrPlaintextNotLocal
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("backend: adapter %s: %w", addr, err)
	}
	b.conns = append(b.conns, conn)
	p.SetEventPublisher(eventsv1.NewEventPublisherClient(conn))
	return nil
}
