// Package watch follows the audit stream once per process and tells each
// watcher when a new record about its citizen is stored: the citizen
// page's live view. One ordered consumer serves every open page, whatever
// their number; a message (a batch of records, format 2, or one record,
// format 1) wakes the watchers of every citizen it holds a record about.
package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/jisr-bus/jisr/gateway/audit/record"
)

// ErrClosed: Watch after Close.
var ErrClosed = errors.New("watch: closed")

// Citizens follows the audit stream for the watchers it has, and only
// while it has one: its consumer starts with the first watcher and is
// stopped and deleted when the last one leaves. Its zero value is not
// usable: use New.
type Citizens struct {
	records jetstream.Stream
	log     *slog.Logger

	mu       sync.Mutex
	oc       jetstream.Consumer
	cons     jetstream.ConsumeContext
	watchers map[string]map[chan struct{}]struct{}
	closed   bool
}

// New returns a follower of records (the audit stream). It reads while it
// has watchers.
func New(records jetstream.Stream, log *slog.Logger) *Citizens {
	if log == nil {
		log = slog.Default()
	}
	return &Citizens{records: records, log: log, watchers: map[string]map[chan struct{}]struct{}{}}
}

// Watch returns a channel that receives a value after each new message of
// the audit stream holding a record about ckey, stored after Watch
// returns (values not yet received are merged into one), and the function
// that stops the watch. It fails when the stream cannot be followed.
func (c *Citizens) Watch(ctx context.Context, ckey string) (<-chan struct{}, func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, nil, ErrClosed
	}
	if c.cons == nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		oc, err := c.records.OrderedConsumer(cctx, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{record.AllFilter()}, DeliverPolicy: jetstream.DeliverNewPolicy,
		})
		if err != nil {
			return nil, nil, fmt.Errorf("watch: the audit stream cannot be followed: %w", err)
		}
		cons, err := oc.Consume(c.handle, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			c.log.Warn("citizen live view: following the audit stream", "err", err)
		}))
		if err != nil {
			return nil, nil, fmt.Errorf("watch: the audit stream cannot be followed: %w", err)
		}
		c.oc, c.cons = oc, cons
	}
	ch := make(chan struct{}, 1)
	set := c.watchers[ckey]
	if set == nil {
		set = map[chan struct{}]struct{}{}
		c.watchers[ckey] = set
	}
	set[ch] = struct{}{}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			delete(c.watchers[ckey], ch)
			if len(c.watchers[ckey]) == 0 {
				delete(c.watchers, ckey)
			}
			if len(c.watchers) == 0 {
				// No one watches: the stream is not read for nothing.
				c.stopLocked()
			}
		})
	}
	return ch, stop, nil
}

// Close stops following the stream; Watch fails after it.
func (c *Citizens) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.stopLocked()
}

// stopLocked stops the consumer and deletes it from the server (in the
// background: c.mu is held), with c.mu held.
func (c *Citizens) stopLocked() {
	if c.cons == nil {
		return
	}
	c.cons.Stop()
	var name string
	if info := c.oc.CachedInfo(); info != nil {
		name = info.Name
	}
	c.oc, c.cons = nil, nil
	if name == "" {
		return // the server lets an idle ordered consumer expire
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.records.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			c.log.Debug("citizen live view: deleting the idle consumer", "consumer", name, "err", err)
		}
	}()
}

func (c *Citizens) handle(m jetstream.Msg) {
	c.mu.Lock()
	idle := len(c.watchers) == 0
	c.mu.Unlock()
	if idle {
		return
	}
	_, ckey, batch, recs, err := record.Stored(m.Subject(), m.Headers(), m.Data())
	if err != nil {
		return // not a message of the log: `jisr audit verify` names it
	}
	if !batch {
		c.wake(ckey)
		return
	}
	for _, b := range recs {
		if k, ok := CKeyOf(b); ok {
			c.wake(k)
		}
	}
}

func (c *Citizens) wake(ckey string) {
	if ckey == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch := range c.watchers[ckey] {
		select {
		case ch <- struct{}{}:
		default: // one pending value says it all
		}
	}
}

// ckeyField is the number of Record.ckey (proto/jisr/audit/v1/record.proto).
const ckeyField = 9

// CKeyOf returns the ckey of a stored record without decoding the rest of
// it: what record.Parse(b).GetCkey() returns (the last ckey field wins, as
// in protobuf), or false when b is not well-formed protobuf.
func CKeyOf(b []byte) (string, bool) {
	var ckey string
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", false
		}
		b = b[n:]
		if num == ckeyField && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", false
			}
			ckey, b = string(v), b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return "", false
		}
		b = b[n:]
	}
	return ckey, true
}
