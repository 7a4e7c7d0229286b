package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/jisr-bus/jisr/bus/natsserver"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

// Status is the hub's health as the operator sees it (jisr status).
type Status struct {
	Time     time.Time       `json:"time"`
	Healthy  bool            `json:"healthy"`
	Problems []string        `json:"problems,omitempty"`
	Nodes    []NodeStatus    `json:"nodes"`
	Streams  []StreamStatus  `json:"streams"`
	Gateways []GatewayStatus `json:"gateways"`
	Members  []MemberStatus  `json:"members"`
}

// NodeStatus is one NATS node: from its monitoring endpoint when given
// (--monitor), else only what the streams' cluster information says.
type NodeStatus struct {
	Name    string `json:"name"`
	Monitor string `json:"monitor,omitempty"`
	// State is "up", "down" (its monitoring endpoint does not answer), or
	// "unknown" (named by the streams, no --monitor given for it).
	State       string `json:"state"`
	Version     string `json:"version,omitempty"`
	Uptime      string `json:"uptime,omitempty"`
	Routes      int    `json:"routes"`
	Connections int    `json:"connections"`
	Error       string `json:"error,omitempty"`
}

// StreamStatus is one stream or bucket of the federation.
type StreamStatus struct {
	Name     string          `json:"name"`
	Stream   string          `json:"stream"`
	Replicas int             `json:"replicas"`
	Leader   string          `json:"leader,omitempty"`
	Messages uint64          `json:"messages"`
	Peers    []ReplicaStatus `json:"peers,omitempty"`
	Error    string          `json:"error,omitempty"`
}

// ReplicaStatus is one follower of a stream.
type ReplicaStatus struct {
	Name    string `json:"name"`
	Current bool   `json:"current"`
	Offline bool   `json:"offline"`
	Lag     uint64 `json:"lag"`
}

// GatewayStatus is a connected gateway replica.
type GatewayStatus struct {
	Instance string `json:"instance"`
	Node     string `json:"node"`
}

// MemberStatus is a member: where its adapter is connected, and when its
// SVID expires: the earliest expiry among the SVIDs its open connections
// presented (SVIDSource "connection on <node>", read from the node), else
// the SVID file in the certs directory (SVIDSource "certs directory").
type MemberStatus struct {
	Member      string     `json:"member"`
	ID          string     `json:"spiffe_id"`
	Connected   []string   `json:"connected"` // the nodes its connections are on
	SVIDExpires *time.Time `json:"svid_expires,omitempty"`
	SVIDSource  string     `json:"svid_source,omitempty"`
}

// HubStatus gathers the hub's health: the streams' and buckets' replicas
// through the JetStream API (as the operator, the only identity that may
// call it on every stream), and the nodes, routes and connections through
// each node's monitoring endpoint (monitors). It does not use the system
// account: no jisr identity holds it. SVID expiry per member is what its
// open connections presented, as each node reports it
// (natsserver.SVIDzPath on its monitoring port): under SPIRE the operator
// holds no member's SVID, and a Workload API serves each workload only its
// own. Without a connection it is read from the certs directory when the
// SVIDs are files (the dev CA).
func HubStatus(ctx context.Context, g *Env, monitors []string) (*Status, error) {
	fed, err := g.Federation()
	if err != nil {
		return nil, err
	}
	st := &Status{Time: time.Now().UTC()}
	nc, src, err := g.Connect(ctx, subject.Operator, nats.MaxReconnects(0))
	if err != nil {
		return nil, err
	}
	defer func() { nc.Close(); src.Close() }()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	specs, err := natsstate.All(stream.Config{})
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, sp := range specs {
		ss := StreamStatus{Name: sp.Name(), Stream: sp.Stream}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := js.Stream(sctx, sp.Stream)
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = s.Info(sctx)
		}
		cancel()
		if err != nil {
			ss.Error = err.Error()
			st.Problems = append(st.Problems, fmt.Sprintf("stream %s: %v", sp.Name(), err))
			st.Streams = append(st.Streams, ss)
			continue
		}
		ss.Replicas, ss.Messages = info.Config.Replicas, info.State.Msgs
		if c := info.Cluster; c != nil {
			ss.Leader = c.Leader
			seen[c.Leader] = true
			for _, r := range c.Replicas {
				ss.Peers = append(ss.Peers, ReplicaStatus{Name: r.Name, Current: r.Current, Offline: r.Offline, Lag: r.Lag})
				seen[r.Name] = true
				if !r.Current || r.Offline {
					st.Problems = append(st.Problems, fmt.Sprintf("stream %s: replica %s is %s (lag %d)", sp.Name(), r.Name, replicaState(r.Current, r.Offline), r.Lag))
				}
			}
			if c.Leader == "" {
				st.Problems = append(st.Problems, fmt.Sprintf("stream %s has no leader", sp.Name()))
			}
		}
		if ss.Replicas > 1 && len(ss.Peers)+1 < ss.Replicas {
			st.Problems = append(st.Problems, fmt.Sprintf("stream %s: %d of %d replicas placed", sp.Name(), len(ss.Peers)+1, ss.Replicas))
		}
		st.Streams = append(st.Streams, ss)
	}

	members := map[string]*MemberStatus{}
	for _, m := range fed.Members {
		ms := &MemberStatus{Member: m.Name, ID: m.ID.String(), Connected: []string{}}
		members[ms.ID] = ms
	}
	gatewayID := fed.ID("gateway").String()
	down := 0
	for _, mon := range monitors {
		ns, conns := nodeStatus(ctx, strings.TrimRight(mon, "/"))
		if ns.State != "up" {
			down++
			st.Problems = append(st.Problems, fmt.Sprintf("node at %s: %s", mon, ns.Error))
		}
		delete(seen, ns.Name)
		st.Nodes = append(st.Nodes, ns)
		if ns.State == "up" {
			for _, p := range peerSVIDs(ctx, strings.TrimRight(mon, "/")) {
				m := members[p.ID]
				if m == nil || m.SVIDExpires != nil && !p.NotAfter.Before(*m.SVIDExpires) {
					continue
				}
				t := p.NotAfter.UTC()
				m.SVIDExpires, m.SVIDSource = &t, "connection on "+ns.Name
			}
		}
		for _, c := range conns {
			switch {
			case c.User == gatewayID:
				// A replica may hold more than one connection.
				if gs := (GatewayStatus{Instance: strings.TrimPrefix(c.Name, GatewayConnName), Node: ns.Name}); !slices.Contains(st.Gateways, gs) {
					st.Gateways = append(st.Gateways, gs)
				}
			case members[c.User] != nil:
				m := members[c.User]
				if !slices.Contains(m.Connected, ns.Name) {
					m.Connected = append(m.Connected, ns.Name)
				}
			}
		}
	}
	// Nodes the streams name but no monitoring endpoint answered as: when
	// an endpoint is down, its row stands for them.
	if down == 0 {
		for name := range seen {
			if name != "" {
				st.Nodes = append(st.Nodes, NodeStatus{Name: name, State: "unknown", Error: "no --monitor for it: known from the streams only"})
			}
		}
	}
	slices.SortFunc(st.Nodes, func(a, b NodeStatus) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(st.Gateways, func(a, b GatewayStatus) int { return strings.Compare(a.Instance, b.Instance) })
	for _, m := range fed.Members {
		ms := members[m.ID.String()]
		if len(monitors) > 0 && len(ms.Connected) == 0 {
			st.Problems = append(st.Problems, fmt.Sprintf("member %s is not connected", m.Name))
		}
		if ms.SVIDExpires == nil {
			if s, err := x509svid.Load(svid.Paths(g.CertsDir, m.ID)); err == nil {
				t := s.Certificates[0].NotAfter.UTC()
				ms.SVIDExpires, ms.SVIDSource = &t, "certs directory"
			}
		}
		// An SVID file is renewed by hand: a day's notice. A connection's
		// SVID is short-lived under SPIRE and renewed before it expires (the
		// server closes the connection at its expiry): not a problem.
		if ms.SVIDExpires != nil && ms.SVIDSource == "certs directory" && time.Until(*ms.SVIDExpires) < 24*time.Hour {
			st.Problems = append(st.Problems, fmt.Sprintf("member %s: SVID expires %s", m.Name, ms.SVIDExpires.Format(time.RFC3339)))
		}
		st.Members = append(st.Members, *ms)
	}
	if len(monitors) > 0 && len(st.Gateways) == 0 {
		st.Problems = append(st.Problems, "no gateway replica is connected")
	}
	st.Healthy = len(st.Problems) == 0
	return st, nil
}

func replicaState(current, offline bool) string {
	switch {
	case offline:
		return "offline"
	case !current:
		return "behind"
	}
	return "current"
}

// peerSVIDs reads the SVIDs a node's open client connections presented
// (natsserver.SVIDzPath); none when the node does not serve them.
func peerSVIDs(ctx context.Context, mon string) []natsserver.PeerSVID {
	var z struct {
		SVIDs []natsserver.PeerSVID `json:"svids"`
	}
	if err := getJSON(ctx, mon+natsserver.SVIDzPath, &z); err != nil {
		return nil
	}
	return z.SVIDs
}

type connInfo struct {
	Name string `json:"name"`
	User string `json:"authorized_user"`
}

// nodeStatus reads one node's /varz and /connz?auth=true.
func nodeStatus(ctx context.Context, mon string) (NodeStatus, []connInfo) {
	ns := NodeStatus{Monitor: mon, State: "down"}
	var varz struct {
		Name        string `json:"server_name"`
		Version     string `json:"version"`
		Uptime      string `json:"uptime"`
		Routes      int    `json:"routes"`
		Connections int    `json:"connections"`
	}
	if err := getJSON(ctx, mon+"/varz", &varz); err != nil {
		ns.Error = err.Error()
		ns.Name = mon
		return ns, nil
	}
	ns.Name, ns.State, ns.Version, ns.Uptime, ns.Routes, ns.Connections = varz.Name, "up", varz.Version, varz.Uptime, varz.Routes, varz.Connections
	var connz struct {
		Conns []connInfo `json:"connections"`
	}
	if err := getJSON(ctx, mon+"/connz?auth=true&limit=100000", &connz); err != nil {
		ns.Error = err.Error()
	}
	return ns, connz.Conns
}

func getJSON(ctx context.Context, url string, into any) error {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(into)
}

// ErrUnhealthy is returned by PrintStatus when the hub has problems (the
// command's exit status is then non-zero).
var ErrUnhealthy = errors.New("the hub is not healthy")

// PrintStatus writes st as a report, or as JSON.
func PrintStatus(out io.Writer, st *Status, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			return err
		}
	} else {
		w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "NODE\tSTATE\tROUTES\tCONNECTIONS\tVERSION\tUPTIME\t")
		for _, n := range st.Nodes {
			up := n.State
			if n.Error != "" {
				up += ": " + n.Error
			}
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\t\n", n.Name, up, n.Routes, n.Connections, n.Version, n.Uptime)
		}
		fmt.Fprintln(w, "\nSTREAM\tREPLICAS\tLEADER\tFOLLOWERS\tMESSAGES\t")
		for _, s := range st.Streams {
			if s.Error != "" {
				fmt.Fprintf(w, "%s\t-\t-\t%s\t-\t\n", s.Name, s.Error)
				continue
			}
			var fs []string
			for _, p := range s.Peers {
				fs = append(fs, fmt.Sprintf("%s %s lag %d", p.Name, replicaState(p.Current, p.Offline), p.Lag))
			}
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%d\t\n", s.Name, s.Replicas, s.Leader, strings.Join(fs, ", "), s.Messages)
		}
		fmt.Fprintln(w, "\nGATEWAY REPLICA\tNODE\t")
		for _, gw := range st.Gateways {
			fmt.Fprintf(w, "%s\t%s\t\n", gw.Instance, gw.Node)
		}
		fmt.Fprintln(w, "\nMEMBER\tCONNECTED TO\tSVID EXPIRES\t")
		for _, m := range st.Members {
			exp := "unknown"
			if m.SVIDExpires != nil {
				exp = m.SVIDExpires.Format(time.RFC3339) + " (" + m.SVIDSource + ")"
			}
			conn := strings.Join(m.Connected, ",")
			if conn == "" {
				conn = "-"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t\n", m.Member, conn, exp)
		}
		if err := w.Flush(); err != nil {
			return err
		}
		if st.Healthy {
			fmt.Fprintln(out, "\nhealthy")
		} else {
			fmt.Fprintf(out, "\nNOT healthy:\n  %s\n", strings.Join(st.Problems, "\n  "))
		}
	}
	if !st.Healthy {
		return ErrUnhealthy
	}
	return nil
}
