package telemetry

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Memory keeps the most recent spans (a ring of fixed size) so that a
// query's path can be shown next to its audit record where no tracing
// backend is deployed. It is an sdktrace.SpanProcessor.
//
// Every span of a recorded query passes through OnEnd, so keeping one
// allocates nothing: the spans of one trace are a chain through the ring
// (each slot names the trace's previous span and the sequence number that
// slot had then), and the index holds only each trace's newest slot.
//
// The ring is cut into shards by trace (one, for a ring of under
// memoryShardFrom spans), each with its own lock: every query ends several
// spans, and one lock for all of them was a point of contention of the
// gateway on many cores.
type Memory struct {
	shards []memShard
}

// memoryShardFrom is the smallest ring that is sharded, in memoryShards.
const memoryShardFrom, memoryShards = 1024, 16

// memShard is the ring of the traces whose ID ends in its number.
type memShard struct {
	mu   sync.Mutex
	ring []slot // converted to Span only when asked for
	seq  uint64 // spans kept so far; the next goes to ring[seq%len(ring)]
	// index is each trace's newest slot; an entry goes when that slot is
	// overwritten, so it never holds more traces than the ring has slots.
	index map[trace.TraceID]int32
	_     [64]byte // its own cache line: the shards' locks are taken at once
}

// slot is one kept span and the link to the previous span of its trace.
type slot struct {
	span    sdktrace.ReadOnlySpan
	trace   trace.TraceID
	seq     uint64 // 1, 2, …: when it was kept; 0: empty
	prev    int32  // the trace's previous span, -1 for none
	prevSeq uint64 // ring[prev].seq when linked: a different seq there means evicted
}

// Span is one finished span as served by Handler (JSON).
type Span struct {
	TraceID    string            `json:"trace_id"`
	SpanID     string            `json:"span_id"`
	ParentID   string            `json:"parent_span_id,omitempty"`
	Name       string            `json:"name"`
	Kind       string            `json:"kind"`
	Service    string            `json:"service,omitempty"`
	Start      time.Time         `json:"start"`
	End        time.Time         `json:"end"`
	DurationUS int64             `json:"duration_us"`
	Status     string            `json:"status,omitempty"`
	StatusMsg  string            `json:"status_message,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
	// Links name spans of other traces this one follows from (the gateway's
	// query span links the caller's span: see docs/observability.md).
	Links []Link `json:"links,omitempty"`
}

// Link is a span of another trace.
type Link struct {
	TraceID string `json:"trace_id"`
	SpanID  string `json:"span_id"`
}

// NewMemory keeps the last n spans (n > 0): exactly, below
// memoryShardFrom; from there, the last n/memoryShards of each shard.
func NewMemory(n int) *Memory {
	n = max(n, 1)
	shards := 1
	if n >= memoryShardFrom {
		shards = memoryShards
	}
	m := &Memory{shards: make([]memShard, shards)}
	for i := range m.shards {
		each := n / shards
		m.shards[i] = memShard{ring: make([]slot, each), index: make(map[trace.TraceID]int32, each)}
	}
	return m
}

// shard holds the trace id.
func (m *Memory) shard(id trace.TraceID) *memShard {
	return &m.shards[int(id[len(id)-1])%len(m.shards)]
}

// OnStart implements sdktrace.SpanProcessor.
func (m *Memory) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd keeps the span (a snapshot the SDK already made), evicting the
// oldest; the hot path does no conversion and no allocation.
func (m *Memory) OnEnd(s sdktrace.ReadOnlySpan) {
	id := s.SpanContext().TraceID()
	m.shard(id).keep(s, id)
}

func (m *memShard) keep(s sdktrace.ReadOnlySpan, id trace.TraceID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := int32(m.seq % uint64(len(m.ring)))
	m.seq++
	if old := &m.ring[p]; old.seq != 0 {
		// The oldest span kept: the oldest of its trace too, so nothing
		// of the trace points past it once it is the trace's newest.
		if h, ok := m.index[old.trace]; ok && h == p {
			delete(m.index, old.trace)
		}
	}
	sl := slot{span: s, trace: id, seq: m.seq, prev: -1}
	if h, ok := m.index[id]; ok {
		sl.prev, sl.prevSeq = h, m.ring[h].seq
	}
	m.ring[p] = sl
	m.index[id] = p
}

func toSpan(s sdktrace.ReadOnlySpan) Span {
	sc := s.SpanContext()
	sp := Span{
		TraceID: sc.TraceID().String(), SpanID: sc.SpanID().String(), Name: s.Name(),
		Kind: s.SpanKind().String(), Start: s.StartTime(), End: s.EndTime(),
		DurationUS: s.EndTime().Sub(s.StartTime()).Microseconds(),
	}
	if p := s.Parent(); p.IsValid() {
		sp.ParentID = p.SpanID().String()
	}
	if st := s.Status(); st.Code != 0 {
		sp.Status, sp.StatusMsg = st.Code.String(), st.Description
	}
	if attrs := s.Attributes(); len(attrs) > 0 {
		sp.Attributes = make(map[string]string, len(attrs))
		for _, a := range attrs {
			sp.Attributes[string(a.Key)] = a.Value.Emit()
		}
	}
	for _, l := range s.Links() {
		sp.Links = append(sp.Links, Link{TraceID: l.SpanContext.TraceID().String(), SpanID: l.SpanContext.SpanID().String()})
	}
	if r := s.Resource(); r != nil {
		if v, ok := r.Set().Value("service.name"); ok {
			sp.Service = v.Emit()
		}
	}
	return sp
}

// Shutdown implements sdktrace.SpanProcessor.
func (m *Memory) Shutdown(context.Context) error { return nil }

// ForceFlush implements sdktrace.SpanProcessor.
func (m *Memory) ForceFlush(context.Context) error { return nil }

// Trace returns the spans kept of one trace, oldest start first.
func (m *Memory) Trace(id trace.TraceID) []Span {
	return m.shard(id).trace(id)
}

func (m *memShard) trace(id trace.TraceID) []Span {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Span
	p, ok := m.index[id]
	for ok {
		sl := &m.ring[p]
		out = append(out, toSpan(sl.span))
		ok = sl.prev >= 0 && m.ring[sl.prev].seq == sl.prevSeq && m.ring[sl.prev].trace == id
		p = sl.prev
	}
	slices.Reverse(out)             // ended oldest first, as kept
	for i := 1; i < len(out); i++ { // few spans: insertion sort by start
		for j := i; j > 0 && out[j].Start.Before(out[j-1].Start); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// Handler serves GET /v1/traces/{id}: the kept spans of one trace as JSON.
func (m *Memory) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := trace.TraceIDFromHex(r.PathValue("id"))
		if err != nil {
			http.Error(w, "a trace id is 32 hexadecimal digits", http.StatusBadRequest)
			return
		}
		spans := m.Trace(id)
		if len(spans) == 0 {
			http.Error(w, "no spans of this trace are kept here (unknown, or evicted)", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"trace_id": id.String(), "spans": spans})
	})
}
