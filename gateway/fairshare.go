package gateway

import (
	"context"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/decision"
)

// Fair share. dispatch runs on the subscription's one delivery goroutine, so
// it never blocks and never decodes: it admits a query only when the message
// is within its member's size limit, the member has an in-flight slot and a
// rate token, and the gateway has a work slot; otherwise it answers at once
// with ResourceExhausted and hands the refusal's record to the refusal
// auditors. The subscription's pending limits bound what waits for dispatch,
// so the request bytes the gateway holds are at most PendingBytes plus, for
// each member, in_flight × max_request_bytes.

// share is one member's limits and what it uses of them now.
type share struct {
	limits   federation.Limits
	rate     *rate.Limiter
	inFlight atomic.Int64
}

func newShares(fed *federation.Federation) map[string]*share {
	out := make(map[string]*share, len(fed.Members))
	for _, m := range fed.Members {
		out[m.Name] = &share{limits: m.Limits, rate: rate.NewLimiter(rate.Limit(m.Limits.QueriesPerSecond), m.Limits.Burst)}
	}
	return out
}

// consumerToken is the first token after jisr.q.: the publishing member,
// which the NATS permissions prove (a member may publish only on
// jisr.q.<itself>.>). "" when the subject has no such token.
func consumerToken(subj string) string {
	rest, ok := strings.CutPrefix(subj, subject.QueryPrefix+".")
	if !ok {
		return ""
	}
	tok, _, _ := strings.Cut(rest, ".")
	return tok
}

// admit takes a member in-flight slot and a gateway work slot for msg, or
// returns the refusal; release gives the slots back.
func (g *Gateway) admit(sh *share, msg *nats.Msg) *decision.Refusal {
	maxBytes := g.fs.Load().fed.Limits.MaxRequestBytes
	if sh != nil {
		maxBytes = sh.limits.MaxRequestBytes
	}
	if msg.Size() > maxBytes {
		return decision.Refuse(codes.ResourceExhausted, decision.ReasonRequestTooLarge, "the request is larger than the %d bytes allowed to this member", maxBytes)
	}
	if sh != nil && sh.inFlight.Add(1) > int64(sh.limits.InFlight) {
		sh.inFlight.Add(-1)
		return decision.Refuse(codes.ResourceExhausted, decision.ReasonTooManyInFlight, "this member already has %d queries in flight; retry later", sh.limits.InFlight)
	}
	select {
	case g.sem <- struct{}{}:
	default:
		if sh != nil {
			sh.inFlight.Add(-1)
		}
		return decision.Refuse(codes.ResourceExhausted, decision.ReasonOverloaded, "the gateway is at capacity; retry later")
	}
	if sh != nil && !sh.rate.Allow() {
		g.release(sh)
		return decision.Refuse(codes.ResourceExhausted, decision.ReasonRateLimited, "this member is over its %g queries per second; retry later", sh.limits.QueriesPerSecond)
	}
	return nil
}

func (g *Gateway) release(sh *share) {
	<-g.sem
	if sh != nil {
		sh.inFlight.Add(-1)
	}
}

// refuseEarly answers a query that admit refused and queues its record.
// Only the consumer, provider, service and method the federation knows, and
// a well-formed purpose, are named; the payload is not decoded.
func (g *Gateway) refuseEarly(msg *nats.Msg, r *decision.Refusal) {
	now := time.Now().UTC()
	d := &decision.Decision{Time: now, VisibleAt: now, Code: r.Code, Reason: r.Reason, FederationVersion: g.fs.Load().version}
	_, _, _, _ = g.name(msg.Subject, d)
	if p := msg.Header.Get(bus.HeaderPurpose); federation.CheckPurpose(p) == nil {
		d.Purpose = p
	}
	g.metrics.observe(d)
	g.metrics.shed.WithLabelValues(d.Consumer, d.Reason).Inc()
	if replyTo(msg, d.Consumer) {
		if err := bus.RespondFrom(msg, nil, r.GRPCStatus(), g.cfg.Instance); err != nil {
			g.log.Debug("refusal not sent", "consumer", d.Consumer, "err", err)
		}
	}
	if g.cfg.Unsafe.SkipAudit {
		return
	}
	select {
	case g.refusals <- d:
	default:
		// Every refusal auditor is busy and the queue is full: the audit log
		// is already behind by RefusalQueue records. The query was answered
		// (with no data); the missing record is counted.
		g.metrics.unaudited.Inc()
	}
}

// replyTo reports whether the gateway may answer msg: only on the consumer's
// own inbox, never on a subject the member chose elsewhere.
func replyTo(msg *nats.Msg, consumer string) bool {
	return consumer != "" && strings.HasPrefix(msg.Reply, subject.Inbox(consumer)+".")
}

// auditRefusals writes the records of early refusals until quit, then what
// is still queued. Several run at once so their appends share group commits.
func (g *Gateway) auditRefusals() {
	defer g.auditors.Done()
	write := func(d *decision.Decision) {
		if err := g.cfg.Audit.Append(context.Background(), d); err != nil {
			g.metrics.auditFailures.Inc()
			g.log.Error("audit append of a refusal failed", "consumer", d.Consumer, "reason", d.Reason, "err", err)
		}
	}
	for {
		select {
		case d := <-g.refusals:
			write(d)
		case <-g.quit:
			for {
				select {
				case d := <-g.refusals:
					write(d)
				default:
					return
				}
			}
		}
	}
}
