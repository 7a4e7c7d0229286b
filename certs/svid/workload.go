package svid

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// WorkloadSource is one identity's Source from the SPIFFE Workload API
// (SPIRE's agent in production).
//
// A process may hold several identities (the gateway connects as /gateway
// and as /consent): the Workload API then serves every SVID the agent has
// for the process, and a WorkloadSource keeps the one whose SPIFFE ID is its
// own, whatever their order. If the agent stops serving that ID (its
// registration entry was deleted), GetX509SVID fails and so does every new
// handshake: the identity is gone, and the process must not carry on as
// another one.
//
// Every change of the identity's SVID (a rotation by SPIRE, or its loss) is
// logged, as FileSource logs a reload.
type WorkloadSource struct {
	*workloadapi.X509Source
	id  spiffeid.ID
	log *slog.Logger

	mu         sync.Mutex
	current    *x509svid.SVID // the last SVID picked, nil before the first or once lost
	lastServed []string       // the IDs of the last update, for errors
}

// OpenWorkloadAPI connects to the Workload API at SPIFFE_ENDPOINT_SOCKET
// (or at the address given by WithWorkloadAPIAddr) and returns id's Source.
// It fails with ErrWrongID when the API does not serve id to this process.
func OpenWorkloadAPI(ctx context.Context, id spiffeid.ID, log *slog.Logger, opts ...WorkloadOption) (*WorkloadSource, error) {
	var o workloadOptions
	for _, opt := range opts {
		opt(&o)
	}
	if log == nil {
		log = slog.Default()
	}
	addr := o.addr
	if addr == "" {
		addr = os.Getenv(EndpointSocketEnv)
	}
	ws := &WorkloadSource{id: id, log: log.With("spiffe_id", id.String())}
	src, err := workloadapi.NewX509Source(ctx,
		workloadapi.WithClientOptions(workloadapi.WithAddr(addr)),
		workloadapi.WithDefaultX509SVIDPicker(ws.pick))
	if err != nil {
		return nil, fmt.Errorf("svid: Workload API at %s: %w", addr, err)
	}
	ws.X509Source = src
	if _, err := src.GetX509SVID(); err != nil {
		src.Close()
		return nil, fmt.Errorf("%w: the Workload API at %s serves this process %s, not %s", ErrWrongID, addr, ws.served(), id)
	}
	return ws, nil
}

// WorkloadOption configures OpenWorkloadAPI.
type WorkloadOption func(*workloadOptions)

type workloadOptions struct {
	addr string
}

// WithWorkloadAPIAddr sets the Workload API's address ("unix:///path"),
// instead of SPIFFE_ENDPOINT_SOCKET.
func WithWorkloadAPIAddr(addr string) WorkloadOption {
	return func(o *workloadOptions) { o.addr = addr }
}

// pick is the X509Source's picker, called on every Workload API update with
// all the SVIDs served to the process.
func (ws *WorkloadSource) pick(svids []*x509svid.SVID) *x509svid.SVID {
	var mine *x509svid.SVID
	for _, s := range svids {
		if s.ID == ws.id {
			mine = s
			break
		}
	}
	ws.mu.Lock()
	prev := ws.current
	ws.current = mine
	ws.lastServed = ids(svids)
	ws.mu.Unlock()
	switch {
	case mine == nil && prev != nil:
		ws.log.Error("the Workload API no longer serves this identity: new connections will fail until it does (was its registration entry deleted?)", "served", ids(svids))
	case mine == nil:
		// Before the first SVID: OpenWorkloadAPI reports it.
	case prev == nil:
		ws.log.Info("SVID received from the Workload API", "serial", mine.Certificates[0].SerialNumber.String(), "not_after", mine.Certificates[0].NotAfter.UTC().Format(time.RFC3339))
	case !prev.Certificates[0].Equal(mine.Certificates[0]):
		ws.log.Info("SVID rotated by the Workload API", "serial", mine.Certificates[0].SerialNumber.String(), "not_after", mine.Certificates[0].NotAfter.UTC().Format(time.RFC3339), "previous_serial", prev.Certificates[0].SerialNumber.String())
	}
	return mine
}

// served lists the SPIFFE IDs of the last update.
func (ws *WorkloadSource) served() []string {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.lastServed
}

func ids(svids []*x509svid.SVID) []string {
	out := make([]string, 0, len(svids))
	for _, s := range svids {
		out = append(out, s.ID.String())
	}
	return out
}
