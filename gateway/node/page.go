package node

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit/watch"
	"github.com/jisr-bus/jisr/gateway/citizen"
	"github.com/jisr-bus/jisr/gateway/citizen/page"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/notify"
)

// citizenPage builds the citizen's page (/citizen/) on the sign-in, with its
// live view following the audit stream (the same stream the access log
// reads, through the audit API prefix when the audit has its own account).
func (n *Node) citizenPage(ctx context.Context, auth page.RequestAuthenticator) (map[string]http.Handler, error) {
	cfg := page.Config{Federation: n.cfg.Federation, Auth: auth, Log: n.cfg.Log}
	var records jetstream.Stream
	if n.audit != nil {
		js, err := jetstream.New(n.cfg.Conn)
		if p := n.cfg.Audit.APIPrefix; p != "" {
			js, err = jetstream.NewWithAPIPrefix(n.cfg.Conn, p)
		}
		if err != nil {
			return nil, err
		}
		if records, err = js.Stream(ctx, subject.AuditStream); err != nil {
			return nil, err
		}
		// One follower of the stream for every open page.
		live := watch.New(records, n.cfg.Log)
		cfg.Live = live
		n.stopCitizen = append(n.stopCitizen, live.Close)
	}
	pg := page.New(cfg)
	n.stopCitizen = append(n.stopCitizen, pg.Shutdown)
	if records != nil {
		// Each access in this replica's log is notified to the citizen: from
		// the log's commits, in process, where the audit log is this
		// process's (never read back from the stream).
		notifier := n.cfg.Notifier
		if notifier == nil {
			notifier = notify.Log{Log: n.cfg.Log}
		}
		f := &notify.Follower{Records: records, LogID: n.cfg.Instance, Notifier: notifier, Log: n.cfg.Log}
		remove := func() {}
		if n.audit.Commits != nil {
			f.Records = nil
			remove = n.audit.Commits.Add(f.Committed)
		}
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := f.Run(fctx); err != nil {
				n.cfg.Log.Error("citizen notifications stopped", "err", err)
			}
		}()
		n.stopCitizen = append(n.stopCitizen, func() { remove(); cancel(); <-done })
	}
	routes := pg.Routes()
	if n.consent != nil {
		routes["POST /v1/consent-requests/{id}/preview"] = http.HandlerFunc(n.preview)
	}
	return routes, nil
}

// preview answers the citizen who asks what a pending request would
// release: the provider's actual values, minimised to the fields asked,
// fetched for the citizen themselves (audited under the purpose "citizen").
func (n *Node) preview(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	ck, eid, err := n.citizens.EID(r)
	if errors.Is(err, citizen.ErrCrossOrigin) {
		writeJSONError(w, http.StatusForbidden, "cross-origin request refused")
		return
	}
	if err != nil {
		writeJSONError(w, http.StatusUnauthorized, "sign in again to preview your data")
		return
	}
	reqs, err := n.consent.Service.Requests(r.Context(), ck)
	if err != nil {
		writeJSONError(w, http.StatusServiceUnavailable, "the consent store is unavailable")
		return
	}
	id := r.PathValue("id")
	i := slices.IndexFunc(reqs, func(q consent.ConsentRequest) bool { return q.ID == id })
	if i < 0 || reqs[i].State != consent.StatePending || len(reqs[i].Methods) == 0 {
		writeJSONError(w, http.StatusNotFound, "no pending request of yours has this ID")
		return
	}
	q := reqs[i]
	fields := q.Asked
	if len(fields) == 0 {
		fields = n.consent.Service.RuleFields(&q)
	}
	out, err := n.gw.Preview(r.Context(), eid, q.Provider, q.Service, q.Methods[0], fields)
	if err != nil {
		n.cfg.Log.Warn("citizen preview failed", "provider", q.Provider, "err", err)
		writeJSONError(w, http.StatusBadGateway, "the provider could not be asked; retry later")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"values":`))
	_, _ = w.Write(out)
	_, _ = w.Write([]byte("}\n"))
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
