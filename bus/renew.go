package bus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"math/rand/v2"
	"slices"
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

// connState is what Call, Serving and the renewal of one connection share:
// the calls in flight, the requests received and not yet answered, and a
// planned reconnection under way.
type connState struct {
	mu       sync.Mutex
	inflight int           // calls in flight (Call) and requests being answered (Serving)
	renewing chan struct{} // non-nil during a planned reconnection; closed at its end
	idle     chan struct{} // closed when the last of inflight ends during one
	// responders are the connection's queue subscriptions that answer
	// requests: paused during a planned reconnection.
	responders []*Responder
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

// Serving counts a request that nc received in, until done is called once
// its answer is sent: a planned reconnection of nc (a renewed SVID) waits
// for it, because the permission to answer a request ends with the
// connection that received it (allow_responses). Unlike a call, a request
// already received never waits for the reconnection. Call it in the
// subscription's handler, before handing the request to another goroutine.
func Serving(nc *nats.Conn) (done func()) {
	st := stateOf(nc)
	if st == nil {
		return func() {}
	}
	st.mu.Lock()
	st.inflight++
	st.mu.Unlock()
	var once sync.Once
	return func() { once.Do(st.leave) }
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
// and requests in flight (and half of what is left of the SVID's life, so
// that the reconnection is done before the server closes the connection);
// reconnectWaitMax how long new calls wait for the reconnection itself.
const (
	renewDrainMax    = 5 * time.Second
	reconnectWaitMax = 5 * time.Second
)

// reconnect is a planned reconnection before notAfter: new calls wait, the
// calls in flight end (their replies come back on this connection) and the
// requests received are answered, then the connection is reopened with the
// current SVID and the waiting calls go on.
func (st *connState) reconnect(nc *nats.Conn, notAfter time.Time, log *slog.Logger) error {
	st.mu.Lock()
	done := make(chan struct{})
	st.renewing = done
	responders := slices.Clone(st.responders)
	st.mu.Unlock()
	defer func() {
		st.mu.Lock()
		st.renewing, st.idle = nil, nil
		close(done)
		st.mu.Unlock()
	}()
	// The responders stop receiving; their requests already received are
	// answered on this connection.
	for _, r := range responders {
		r.pause()
	}
	defer func() {
		for _, r := range responders {
			r.resume(log)
		}
	}()
	drain := time.NewTimer(min(renewDrainMax, max(time.Until(notAfter)/2, 0)))
	defer drain.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	// Reopen once nothing is in flight, or when the drain's time is up (a
	// call or request still in flight then is cut).
	for {
		quiet := true
		for _, r := range responders {
			quiet = quiet && r.paused()
		}
		st.mu.Lock()
		n := st.inflight
		st.mu.Unlock()
		if quiet && n == 0 {
			break
		}
		select {
		case <-tick.C:
			continue
		case <-drain.C:
		}
		log.Warn("reconnecting with the renewed SVID with calls or requests still in flight", "in_flight", n, "responders_stopped", quiet)
		break
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
		if err := st.reconnect(nc, old.NotAfter, log); err != nil {
			return // closed
		}
	}
}
