package bus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jisr-bus/jisr/certs/svid"
)

// renewCheckEvery is how often a connection compares the SVID it presented
// with its source's current one.
var renewCheckEvery = time.Second

// presentedCert records, in c, the leaf certificate each handshake of c
// presents, so that the connection knows which SVID it was opened with.
func presentedCert(c *tls.Config) *atomic.Pointer[x509.Certificate] {
	var p atomic.Pointer[x509.Certificate]
	get := c.GetClientCertificate
	if get == nil {
		return &p
	}
	c.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		cert, err := get(cri)
		if err == nil && cert != nil && len(cert.Certificate) > 0 {
			leaf := cert.Leaf
			if leaf == nil {
				leaf, _ = x509.ParseCertificate(cert.Certificate[0])
			}
			if leaf != nil {
				p.Store(leaf)
			}
		}
		return cert, err
	}
	return &p
}

// connState is what Call and the renewal of one connection share: the
// calls in flight, and a planned reconnection under way.
type connState struct {
	mu       sync.Mutex
	inflight int
	renewing chan struct{} // non-nil during a planned reconnection; closed at its end
	idle     chan struct{} // closed when the last call in flight ends during one
}

// conns maps each connection opened by Connect to its state.
var conns sync.Map // *nats.Conn → *connState

func stateOf(nc *nats.Conn) *connState {
	if st, ok := conns.Load(nc); ok {
		return st.(*connState)
	}
	return nil
}

// enter counts a call in; during a planned reconnection it first waits for
// its end (bounded by ctx).
func (st *connState) enter(ctx context.Context) error {
	st.mu.Lock()
	for st.renewing != nil {
		ch := st.renewing
		st.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return TransportStatus(ctx, ctx.Err())
		}
		st.mu.Lock()
	}
	st.inflight++
	st.mu.Unlock()
	return nil
}

func (st *connState) leave() {
	st.mu.Lock()
	st.inflight--
	if st.inflight == 0 && st.idle != nil {
		close(st.idle)
		st.idle = nil
	}
	st.mu.Unlock()
}

// renewDrainMax bounds how long a planned reconnection waits for the calls
// in flight; reconnectWaitMax how long new calls wait for it.
const (
	renewDrainMax    = 2 * time.Second
	reconnectWaitMax = 5 * time.Second
)

// reconnect is a planned reconnection: new calls wait, the calls in flight
// end (their replies come back on this connection), then the connection is
// reopened with the current SVID and the waiting calls go on.
func (st *connState) reconnect(nc *nats.Conn) error {
	st.mu.Lock()
	done := make(chan struct{})
	st.renewing = done
	var idle chan struct{}
	if st.inflight > 0 {
		idle = make(chan struct{})
		st.idle = idle
	}
	st.mu.Unlock()
	defer func() {
		st.mu.Lock()
		st.renewing, st.idle = nil, nil
		close(done)
		st.mu.Unlock()
	}()
	if idle != nil {
		select {
		case <-idle:
		case <-time.After(renewDrainMax):
		}
	}
	if err := nc.ForceReconnect(); err != nil {
		return err
	}
	deadline := time.Now().Add(reconnectWaitMax)
	for !nc.IsConnected() && !nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// renewBeforeExpiry reconnects nc with its source's renewed SVID before the
// SVID the connection was opened with expires. The NATS server closes a
// connection at its SVID's NotAfter (bus/natsserver), and SPIRE issues the
// SVIDs of one agent together: left alone, every connection of the
// federation would close in the same instant, with the messages in flight.
// Instead each connection, once its source holds a new SVID, reconnects at
// a random moment in the middle half of what is left of the old one's life,
// on its own, after the calls in flight on it (Call) have ended. It returns
// when nc is closed.
func renewBeforeExpiry(nc *nats.Conn, src svid.Source, presented *atomic.Pointer[x509.Certificate], st *connState, log *slog.Logger) {
	defer conns.Delete(nc)
	t := time.NewTicker(renewCheckEvery)
	defer t.Stop()
	var pending *x509.Certificate // the old SVID a reconnection is planned for
	var due time.Time
	for range t.C {
		if nc.IsClosed() {
			return
		}
		old := presented.Load()
		if old == nil || !nc.IsConnected() {
			continue
		}
		cur, err := src.GetX509SVID()
		if err != nil || len(cur.Certificates) == 0 || cur.Certificates[0].Equal(old) {
			pending = nil
			continue
		}
		if pending != old {
			left := max(time.Until(old.NotAfter), 0)
			pending, due = old, time.Now().Add(left/4+rand.N(left/2+1))
			continue
		}
		if time.Now().Before(due) {
			continue
		}
		log.Info("reconnecting with the renewed SVID before the one this connection presented expires",
			"presented_not_after", old.NotAfter.UTC().Format(time.RFC3339), "renewed_not_after", cur.Certificates[0].NotAfter.UTC().Format(time.RFC3339))
		pending = nil
		if err := st.reconnect(nc); err != nil {
			return // closed
		}
	}
}
