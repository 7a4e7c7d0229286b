package bus

import (
	"log/slog"
	"slices"
	"sync"

	"github.com/nats-io/nats.go"
)

// Responder is a queue subscription on which a component answers requests
// (a provider adapter, the gateway's questions to it). Its answers may only
// leave on the connection that received the requests (the server's
// allow_responses): so a planned reconnection of the connection (a renewed
// SVID, renewBeforeExpiry) first stops the subscription's deliveries and
// lets the requests already received be answered (Serving), then reopens
// the connection and subscribes again. While it does, the requests go to
// the queue group's other members or, with none, find no responder, which
// Call asks again for noResponderRetry.
type Responder struct {
	nc            *nats.Conn
	subj, queue   string
	handler       nats.MsgHandler
	pMsgs, pBytes int
	mu            sync.Mutex
	sub           *nats.Subscription
	stopped       bool
}

// QueueSubscribe subscribes handler to subj in queue group queue on nc with
// the given pending limits (nats.Subscription.SetPendingLimits), as a
// Responder. The handler counts each request in with Serving until its
// answer is sent.
func QueueSubscribe(nc *nats.Conn, subj, queue string, handler nats.MsgHandler, pendingMsgs, pendingBytes int) (*Responder, error) {
	r := &Responder{nc: nc, subj: subj, queue: queue, handler: handler, pMsgs: pendingMsgs, pBytes: pendingBytes}
	sub, err := r.subscribe()
	if err != nil {
		return nil, err
	}
	r.sub = sub
	if st := stateOf(nc); st != nil {
		st.mu.Lock()
		st.responders = append(st.responders, r)
		st.mu.Unlock()
	}
	return r, nil
}

func (r *Responder) subscribe() (*nats.Subscription, error) {
	sub, err := r.nc.QueueSubscribe(r.subj, r.queue, r.handler)
	if err != nil {
		return nil, err
	}
	if err := sub.SetPendingLimits(r.pMsgs, r.pBytes); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	return sub, nil
}

// Unsubscribe ends the subscription for good.
func (r *Responder) Unsubscribe() error {
	if st := stateOf(r.nc); st != nil {
		st.mu.Lock()
		st.responders = slices.DeleteFunc(st.responders, func(x *Responder) bool { return x == r })
		st.mu.Unlock()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	if r.sub == nil {
		return nil
	}
	return r.sub.Unsubscribe()
}

// Drain ends the subscription for good, once the requests already
// received are handed to the handler (nats.Subscription.Drain).
func (r *Responder) Drain() error {
	if st := stateOf(r.nc); st != nil {
		st.mu.Lock()
		st.responders = slices.DeleteFunc(st.responders, func(x *Responder) bool { return x == r })
		st.mu.Unlock()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	if r.sub == nil {
		return nil
	}
	return r.sub.Drain()
}

// pause stops the deliveries: the server drops the interest, the messages
// it had already sent are still handed to the handler (Drain).
func (r *Responder) pause() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped || r.sub == nil {
		return
	}
	_ = r.sub.Drain()
}

// paused reports whether the deliveries stopped by pause are all handed to
// the handler.
func (r *Responder) paused() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped || r.sub == nil || !r.sub.IsValid()
}

// resume subscribes again after the reconnection.
func (r *Responder) resume(log *slog.Logger) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	if r.sub != nil && r.sub.IsValid() && !r.sub.IsDraining() {
		return
	}
	sub, err := r.subscribe()
	if err != nil {
		log.Error("could not subscribe again after reconnecting with the renewed SVID", "subject", r.subj, "err", err)
		r.sub = nil
		return
	}
	r.sub = sub
}

// current is the subscription of the moment (nil while a resubscription
// failed).
func (r *Responder) current() *nats.Subscription {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sub
}

// Pending is the current subscription's nats.Subscription.Pending.
func (r *Responder) Pending() (int, int, error) {
	if s := r.current(); s != nil {
		return s.Pending()
	}
	return 0, 0, nats.ErrBadSubscription
}

// MaxPending is the current subscription's nats.Subscription.MaxPending:
// since the responder last subscribed.
func (r *Responder) MaxPending() (int, int, error) {
	if s := r.current(); s != nil {
		return s.MaxPending()
	}
	return 0, 0, nats.ErrBadSubscription
}

// Dropped is the current subscription's nats.Subscription.Dropped: since
// the responder last subscribed.
func (r *Responder) Dropped() (int, error) {
	if s := r.current(); s != nil {
		return s.Dropped()
	}
	return 0, nats.ErrBadSubscription
}
