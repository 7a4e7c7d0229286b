// Package notify tells citizens when their data was accessed: each access
// another member made to a citizen's data under consent, explicit request
// or mandate (once the rule's access_log_delay has passed) becomes a
// Notification, handed to a pluggable Notifier — the log in development, a
// webhook towards an SMS or e-mail gateway in production.
//
// A gateway replica notifies the records of its own audit log only
// (jisr.audit.<instance>.>), so replicas never notify an access twice.
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

// Notification is one access to a citizen's data. It names the citizen by
// ckey only: the receiver (the national e-ID platform, which knows how to
// reach the citizen) resolves it.
type Notification struct {
	CKey       string    `json:"ckey"`
	Time       time.Time `json:"time"`
	Consumer   string    `json:"consumer"`
	Provider   string    `json:"provider"`
	Service    string    `json:"service"`
	Method     string    `json:"method"`
	Fields     []string  `json:"fields,omitempty"`
	Purpose    string    `json:"purpose"`
	LegalBasis string    `json:"legal_basis"`
	Law        string    `json:"law,omitempty"`
	// Record is "<log>/<leaf index>": where the access log proves it.
	Record string `json:"record"`
}

// Notifier sends notifications. Notify may be called from several
// goroutines.
type Notifier interface {
	Notify(ctx context.Context, n Notification) error
}

// Log is the development notifier: one log line per notification.
type Log struct{ Log *slog.Logger }

// Notify logs n (the ckey, never an eID).
func (l Log) Notify(_ context.Context, n Notification) error {
	l.Log.LogAttrs(context.Background(), slog.LevelInfo, "citizen notified of an access", // attributes, not ...any: no boxing per query
		slog.String("ckey", n.CKey), slog.String("consumer", n.Consumer), slog.String("provider", n.Provider),
		slog.String("method", n.Method), slog.String("purpose", n.Purpose), slog.String("basis", n.LegalBasis), slog.String("record", n.Record))
	return nil
}

// Webhook POSTs each notification as JSON to URL, for an SMS or e-mail
// gateway. The body is signed: header Jisr-Signature is
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>", so the
// receiver can check it came from the federation and is fresh. A non-2xx
// answer is an error (the notification is logged as not delivered).
type Webhook struct {
	URL    string
	Secret []byte
	Client *http.Client // default: 10 s timeout
}

// defaultClient is a Webhook's client when it names none: one for all, not
// one per notification.
var defaultClient = &http.Client{Timeout: 10 * time.Second}

// SignatureHeader carries the webhook's signature.
const SignatureHeader = "Jisr-Signature"

// Sign returns the signature header value of body at t.
func Sign(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts + "."))
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// Notify posts n.
func (w Webhook) Notify(ctx context.Context, n Notification) error {
	body, err := json.Marshal(n)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(SignatureHeader, Sign(w.Secret, body, time.Now()))
	c := w.Client
	if c == nil {
		c = defaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("notify: webhook answered %s", resp.Status)
	}
	return nil
}

// Of returns the notification of a record, or false when the record is
// not an access to notify: refused, a consent request or a citizen's own
// action (provider "consent"), the citizen's own preview (no consumer), or
// without a citizen.
func Of(r *auditv1.Record) (Notification, bool) {
	if r.GetDecision() != auditv1.Decision_DECISION_ALLOWED || r.GetProvider() == subject.ConsentProvider || r.GetConsumer() == "" ||
		r.GetProvider() == "" || r.GetCkey() == "" || r.GetCkey() == subject.NoCKey {
		return Notification{}, false
	}
	return Notification{
		CKey: r.GetCkey(), Time: r.GetTime().AsTime(), Consumer: r.GetConsumer(), Provider: r.GetProvider(),
		Service: r.GetService(), Method: r.GetMethod(), Fields: r.GetFields(), Purpose: r.GetPurpose(),
		LegalBasis: r.GetLegalBasis(), Law: r.GetLaw(), Record: r.GetLogId() + "/" + strconv.FormatUint(r.GetLeafIndex(), 10),
	}, true
}

// Follower notifies the accesses of one audit log as they are appended:
// read back from the stream (Records), or, in the gateway that writes the
// log, handed over in process by the log's commit hook (Records nil;
// audit.Log.OnCommit calls Committed), which spares reading every record
// back.
type Follower struct {
	Records  jetstream.Stream // nil: the records come from Committed
	LogID    string           // this gateway's instance
	Notifier Notifier
	Log      *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Queue bounds the commits handed over and not yet read (default
	// DefaultQueue batches).
	Queue int
	// Workers is how many notifications the notifier is given at once
	// (default DefaultWorkers). The Log notifier, which never waits, is
	// called by the follower itself.
	Workers int

	mu      sync.Mutex // guards stopped and sends against a late deliver
	stopped bool
	wg      sync.WaitGroup

	init    sync.Once
	commits chan audit.Committed
	// sends holds the notifications due and not yet taken by a worker; a
	// full one holds the follower back, so its queue of commits fills and
	// drops loudly (Committed), rather than a goroutine per notification.
	sends   chan Notification
	workers sync.Once
	dropped atomic.Uint64 // records of commits dropped, queue full
	lost    atomic.Uint64 // in all, for Dropped
	names   interner      // runCommitted's
}

// DefaultQueue is the default bound of the commits waiting for the
// follower: at the log's largest batches, hundreds of thousands of records.
const DefaultQueue = 4096

// DefaultWorkers is the default number of notifications sent at once.
const DefaultWorkers = 16

// NotifyTimeout bounds one call of a notifier (but Log's).
const NotifyTimeout = 15 * time.Second

func (f *Follower) setup() {
	f.init.Do(func() {
		if f.Now == nil {
			f.Now = time.Now
		}
		q := f.Queue
		if q <= 0 {
			q = DefaultQueue
		}
		f.commits = make(chan audit.Committed, q)
		w := f.Workers
		if w <= 0 {
			w = DefaultWorkers
		}
		f.Workers = w
		f.sends = make(chan Notification, 64*w)
	})
}

// startWorkers starts the workers that hand the notifications to the
// notifier, once; stop ends them once they have sent what was queued.
func (f *Follower) startWorkers(ctx context.Context) {
	f.workers.Do(func() {
		if _, ok := f.Notifier.(Log); ok {
			return // called inline: it never waits
		}
		base := context.WithoutCancel(ctx) // a notification under way is finished
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.stopped {
			return
		}
		for range f.Workers {
			f.wg.Go(func() {
				for n := range f.sends {
					f.send(base, n)
				}
			})
		}
	})
}

// send hands n to the notifier, within NotifyTimeout (Log never waits: it
// gets no timer).
func (f *Follower) send(ctx context.Context, n Notification) {
	if _, ok := f.Notifier.(Log); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, NotifyTimeout)
		defer cancel()
	}
	if err := f.Notifier.Notify(ctx, n); err != nil {
		f.Log.Warn("citizen notification not delivered", "record", n.Record, "err", err)
	}
}

// Committed hands over a commit of the gateway's own log (for
// audit.Log.OnCommit): it never blocks the log's sequencer. When the queue
// is full (the follower is not keeping up, or not running), the commit's
// records are not notified: the first such loss logs an error at once, and
// Run logs how many were lost once it reads again (Dropped counts them).
func (f *Follower) Committed(c audit.Committed) {
	f.setup()
	select {
	case f.commits <- c:
	default:
		n := uint64(len(c.Leaves))
		f.lost.Add(n)
		if f.dropped.Add(n) == n {
			f.Log.Error("citizen notifications lost: the notifier's queue is full", "log", c.LogID, "first", c.First, "records", n)
		}
	}
}

// Dropped returns how many records were not notified because the queue
// of commits was full.
func (f *Follower) Dropped() uint64 { return f.lost.Load() }

// Run follows the log until ctx ends. A record whose access the citizen may
// see only later (a mandate's access_log_delay) is notified then; such a
// wait is held in memory, so a restart of the gateway loses it (and the
// records appended while it was down are not notified).
func (f *Follower) Run(ctx context.Context) error {
	f.setup()
	f.startWorkers(ctx)
	if f.Records == nil {
		f.runCommitted(ctx)
		return nil
	}
	oc, err := f.Records.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{record.LogFilter(f.LogID)}, DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return fmt.Errorf("notify: follow the audit log: %w", err)
	}
	cons, err := oc.Consume(func(m jetstream.Msg) {
		// A message holds a batch of records (format 2) or one (format 1).
		_, _, _, recs, err := record.Stored(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			return // not a message of the log: `jisr audit verify` names it
		}
		for _, b := range recs {
			r, err := record.Parse(b)
			if err != nil || r.GetLogId() != f.LogID {
				continue
			}
			f.notify(ctx, r)
		}
	})
	if err != nil {
		return fmt.Errorf("notify: follow the audit log: %w", err)
	}
	<-ctx.Done()
	cons.Stop()
	f.stop()
	return nil
}

// runCommitted notifies the commits handed over until ctx ends.
func (f *Follower) runCommitted(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			// The commits already handed over are notified (the hook is
			// removed before ctx ends, so this ends).
			for {
				select {
				case c := <-f.commits:
					f.notifyCommit(ctx, c)
					continue
				default:
				}
				break
			}
			f.stop()
			return
		case c := <-f.commits:
			f.notifyCommit(ctx, c)
		}
	}
}

func (f *Follower) notifyCommit(ctx context.Context, c audit.Committed) {
	if n := f.dropped.Swap(0); n > 0 {
		f.Log.Error("citizen notifications lost: the notifier's queue was full", "log", c.LogID, "records", n)
	}
	if c.LogID != f.LogID {
		return
	}
	if l, ok := f.Notifier.(Log); ok && !l.Log.Enabled(ctx, slog.LevelInfo) {
		return // the log level hides the development notifier's lines: nothing to build
	}
	for _, lf := range c.Leaves {
		// The notification straight from the record's bytes; record.Parse
		// only for a record it refuses, to say why.
		n, visible, ok, bad := notice(lf.Record, &f.names)
		if !bad {
			if ok {
				f.deliver(ctx, n, visible)
			}
			continue
		}
		r, err := record.Parse(lf.Record)
		if err != nil {
			f.Log.Warn("citizen notification: a committed record does not parse", "log", c.LogID, "first", c.First, "err", err)
			continue
		}
		f.notify(ctx, r)
	}
}

// stop waits for the notifications under way and queued. A callback may
// still be running: no notification is queued once stopped is set, so
// closing sends and Wait do not race a late deliver.
func (f *Follower) stop() {
	f.mu.Lock()
	if !f.stopped {
		f.stopped = true
		close(f.sends)
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// notify hands r's notification to the notifier once the citizen may see
// the access.
func (f *Follower) notify(ctx context.Context, r *auditv1.Record) {
	if n, ok := Of(r); ok {
		f.deliver(ctx, n, r.GetVisibleAt().AsTime())
	}
}

// deliver hands n to the notifier once visible has come: to a worker (or,
// for Log, at once), or, for an access the citizen may see only later, after
// a wait of its own (a mandate's access_log_delay: rare).
func (f *Follower) deliver(ctx context.Context, n Notification, visible time.Time) {
	if wait := visible.Sub(f.Now()); wait > 0 {
		f.later(ctx, n, wait)
		return
	}
	f.due(ctx, n)
}

// later sends n after wait. Its own function: the closure's copy of n would
// otherwise move every notification to the heap, not only the delayed ones.
func (f *Follower) later(ctx context.Context, n Notification, wait time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	f.wg.Go(func() {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.due(ctx, n)
	})
}

// due sends n, or queues it for a worker. A full queue holds the caller
// back: the workers drain it until stop closes it.
func (f *Follower) due(ctx context.Context, n Notification) {
	if _, ok := f.Notifier.(Log); ok {
		f.send(ctx, n) // Log ignores ctx
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	f.sends <- n
}
