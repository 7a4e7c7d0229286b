package node

import (
	"context"
	"net/http"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/citizen/page"
)

// citizenPage builds the citizen's page (/citizen/) on the sign-in, with its
// live view following the audit stream (the same stream the access log
// reads, through the audit API prefix when the audit has its own account).
func (n *Node) citizenPage(ctx context.Context) (map[string]http.Handler, error) {
	cfg := page.Config{Federation: n.cfg.Federation, Auth: n.citizens, Log: n.cfg.Log}
	if n.audit != nil {
		js, err := jetstream.New(n.cfg.Conn)
		if p := n.cfg.Audit.APIPrefix; p != "" {
			js, err = jetstream.NewWithAPIPrefix(n.cfg.Conn, p)
		}
		if err != nil {
			return nil, err
		}
		if cfg.Records, err = js.Stream(ctx, subject.AuditStream); err != nil {
			return nil, err
		}
	}
	return page.New(cfg).Routes(), nil
}
