package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/jisr-bus/jisr/bus/loopback"
	"github.com/jisr-bus/jisr/bus/telemetry"
)

// TraceBackend is a tracing backend's query API: where the console reads a
// decision's trace when the gateways export their spans there (--otlp),
// instead of the one gateway's in-memory store.
type TraceBackend interface {
	// Trace returns the spans of one trace, oldest start first, or an
	// error wrapping ErrTraceNotFound when the backend has none of it.
	Trace(ctx context.Context, id trace.TraceID) ([]telemetry.Span, error)
	// String names the backend for the auditor ("Jaeger at http://…").
	String() string
}

// ErrTraceNotFound: the tracing backend has no span of the trace (unknown,
// expired, or not yet exported: the gateways export in batches).
var ErrTraceNotFound = errors.New("the tracing backend has no span of this trace")

// ErrTracesFrom: --traces-from names no backend the console can read.
var ErrTracesFrom = errors.New("console: --traces-from")

// ParseTracesFrom reads the --traces-from setting, kind=URL; the one kind
// is jaeger, whose URL is the base of Jaeger's query service (the UI's
// port, 16686 by default), e.g. jaeger=http://127.0.0.1:16686. "" is none.
func ParseTracesFrom(v string) (TraceBackend, error) {
	if v == "" {
		return nil, nil
	}
	kind, base, ok := strings.Cut(v, "=")
	if !ok || kind != "jaeger" {
		return nil, fmt.Errorf("%w %q: use jaeger=<URL of Jaeger's query service>, e.g. jaeger=http://127.0.0.1:16686", ErrTracesFrom, v)
	}
	j, err := NewJaeger(base)
	if err != nil {
		return nil, err
	}
	return j, nil
}

// Jaeger reads traces from Jaeger's query service (GET /api/traces/{id},
// the JSON its UI reads; Jaeger v1 all-in-one and query, and Jaeger v2).
type Jaeger struct {
	base   *url.URL
	client *http.Client
}

// Bounds on what the console takes from the backend.
const (
	jaegerTimeout  = 10 * time.Second
	jaegerMaxBytes = 16 << 20
	jaegerMaxSpans = 10000
)

// NewJaeger reads traces from the Jaeger query service at base: plaintext
// http only on a loopback address, https elsewhere.
func NewJaeger(base string) (*Jaeger, error) {
	u, err := url.Parse(strings.TrimSuffix(base, "/"))
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%w: %q is not the base URL of Jaeger's query service (http://127.0.0.1:16686)", ErrTracesFrom, base)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && loopback.Is(u.Host):
	default:
		return nil, fmt.Errorf("%w: %q: plaintext http on a loopback address only, https elsewhere", ErrTracesFrom, base)
	}
	return &Jaeger{base: u, client: &http.Client{
		Timeout: jaegerTimeout,
		// The answer comes from the address configured, not from one a
		// redirect names.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}, nil
}

func (j *Jaeger) String() string { return "Jaeger at " + j.base.String() }

// jaegerTrace is the part of Jaeger's /api/traces answer the console reads.
type jaegerTrace struct {
	Data []struct {
		TraceID string `json:"traceID"`
		Spans   []struct {
			TraceID       string `json:"traceID"`
			SpanID        string `json:"spanID"`
			OperationName string `json:"operationName"`
			References    []struct {
				RefType string `json:"refType"`
				TraceID string `json:"traceID"`
				SpanID  string `json:"spanID"`
			} `json:"references"`
			StartTime int64           `json:"startTime"` // µs since the epoch
			Duration  int64           `json:"duration"`  // µs
			Tags      []jaegerKV      `json:"tags"`
			ProcessID string          `json:"processID"`
			Process   *jaegerProcess  `json:"process"`
			Warnings  json.RawMessage `json:"warnings"`
		} `json:"spans"`
		Processes map[string]jaegerProcess `json:"processes"`
	} `json:"data"`
	Errors []struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
	} `json:"errors"`
}

type jaegerProcess struct {
	ServiceName string `json:"serviceName"`
}

type jaegerKV struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

// Trace fetches one trace and converts Jaeger's spans to the console's:
// the parent is the CHILD_OF reference in the same trace, every other
// reference is a link (how Jaeger stores an OTLP span's links).
func (j *Jaeger) Trace(ctx context.Context, id trace.TraceID) ([]telemetry.Span, error) {
	u := *j.base
	u.Path = strings.TrimSuffix(u.Path, "/") + "/api/traces/" + id.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", j, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, jaegerMaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", j, err)
	}
	if len(body) > jaegerMaxBytes {
		return nil, fmt.Errorf("%s: the answer is larger than %d bytes", j, jaegerMaxBytes)
	}
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("%s: %w", j, ErrTraceNotFound)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: GET %s: %s", j, u.Path, resp.Status)
	}
	var t jaegerTrace
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("%s: not Jaeger's trace JSON: %w", j, err)
	}
	if len(t.Errors) > 0 {
		if t.Errors[0].Code == http.StatusNotFound {
			return nil, fmt.Errorf("%s: %w", j, ErrTraceNotFound)
		}
		return nil, fmt.Errorf("%s: %d %s", j, t.Errors[0].Code, t.Errors[0].Msg)
	}
	var out []telemetry.Span
	for _, tr := range t.Data {
		for _, s := range tr.Spans {
			if len(out) == jaegerMaxSpans {
				return nil, fmt.Errorf("%s: more than %d spans in one trace", j, jaegerMaxSpans)
			}
			tid, err := jaegerID(s.TraceID, 32)
			if err != nil || tid != id.String() {
				return nil, fmt.Errorf("%s: a span of another trace (%q) in the answer for %s", j, s.TraceID, id)
			}
			sid, err := jaegerID(s.SpanID, 16)
			if err != nil {
				return nil, fmt.Errorf("%s: span id %q: %w", j, s.SpanID, err)
			}
			start := time.UnixMicro(s.StartTime)
			sp := telemetry.Span{TraceID: tid, SpanID: sid, Name: s.OperationName, Kind: "internal",
				Start: start, End: start.Add(time.Duration(s.Duration) * time.Microsecond), DurationUS: s.Duration}
			if p, ok := tr.Processes[s.ProcessID]; ok {
				sp.Service = p.ServiceName
			} else if s.Process != nil {
				sp.Service = s.Process.ServiceName
			}
			for _, ref := range s.References {
				rt, err1 := jaegerID(ref.TraceID, 32)
				rs, err2 := jaegerID(ref.SpanID, 16)
				if err1 != nil || err2 != nil {
					return nil, fmt.Errorf("%s: a reference of span %s is not an id", j, sid)
				}
				if ref.RefType == "CHILD_OF" && rt == tid && sp.ParentID == "" {
					sp.ParentID = rs
					continue
				}
				sp.Links = append(sp.Links, telemetry.Link{TraceID: rt, SpanID: rs})
			}
			for _, kv := range s.Tags {
				v := fmt.Sprint(kv.Value)
				switch kv.Key {
				case "span.kind":
					sp.Kind = v
				case "otel.status_code":
					sp.Status = statusName(v)
				case "otel.status_description":
					sp.StatusMsg = v
				case "error", "internal.span.format", "otel.scope.name", "otel.scope.version", "otel.library.name", "otel.library.version":
					// Jaeger's own bookkeeping of the OTLP span.
				default:
					if sp.Attributes == nil {
						sp.Attributes = map[string]string{}
					}
					sp.Attributes[kv.Key] = v
				}
			}
			out = append(out, sp)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: %w", j, ErrTraceNotFound)
	}
	slices.SortStableFunc(out, func(a, b telemetry.Span) int { return a.Start.Compare(b.Start) })
	return out, nil
}

// statusName is an OTLP status code as the in-memory store names it.
func statusName(v string) string {
	switch strings.ToUpper(v) {
	case "ERROR":
		return "Error"
	case "OK":
		return "Ok"
	}
	return ""
}

// jaegerID checks a hexadecimal id and pads it to n digits (Jaeger drops a
// trace id's leading zero half).
func jaegerID(s string, n int) (string, error) {
	if s == "" || len(s) > n {
		return "", errors.New("not an id")
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", errors.New("not lower-case hexadecimal")
		}
	}
	return strings.Repeat("0", n-len(s)) + s, nil
}
