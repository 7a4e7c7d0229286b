package node

import (
	"context"
	"net/http"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/citizen/page"
	"github.com/jisr-bus/jisr/gateway/notify"
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
	pg := page.New(cfg)
	n.stopCitizen = append(n.stopCitizen, pg.Shutdown)
	if cfg.Records != nil {
		// Each access in this replica's log is notified to the citizen.
		notifier := n.cfg.Notifier
		if notifier == nil {
			notifier = notify.Log{Log: n.cfg.Log}
		}
		f := &notify.Follower{Records: cfg.Records, LogID: n.cfg.Instance, Notifier: notifier, Log: n.cfg.Log}
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := f.Run(fctx); err != nil {
				n.cfg.Log.Error("citizen notifications stopped", "err", err)
			}
		}()
		n.stopCitizen = append(n.stopCitizen, func() { cancel(); <-done })
	}
	return pg.Routes(), nil
}
