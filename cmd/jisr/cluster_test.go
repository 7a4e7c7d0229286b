//go:build cluster

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/cmd/internal/dev"
	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/natsstate"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	cnssv1 "github.com/jisr-bus/jisr/proto/gen/jisr/cnss/v1"
	taxv1 "github.com/jisr-bus/jisr/proto/gen/jisr/tax/v1"
)

// link is a ministry's network link to the hub: a TCP relay its adapter
// dials instead of the hub's nodes, which the test cuts (every connection
// closed, new ones refused) and restores.
type link struct {
	ln      net.Listener
	targets []string
	mu      sync.Mutex
	conns   []net.Conn
	cut     bool
}

func newLink(t *testing.T) *link {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &link{ln: ln}
	t.Cleanup(func() { ln.Close(); l.setCut(true) })
	go l.serve()
	return l
}

func (l *link) URL() string { return "tls://" + l.ln.Addr().String() }

func (l *link) serve() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		cut, targets := l.cut, l.targets
		l.mu.Unlock()
		var up net.Conn
		if !cut {
			for _, a := range targets { // the first node that answers
				if up, err = net.DialTimeout("tcp", a, time.Second); err == nil {
					break
				}
			}
		}
		if up == nil {
			c.Close()
			continue
		}
		l.mu.Lock()
		l.conns = append(l.conns, c, up)
		l.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close(); c.Close() }()
		go func() { _, _ = io.Copy(c, up); up.Close(); c.Close() }()
	}
}

func (l *link) setCut(cut bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = cut
	if cut {
		for _, c := range l.conns {
			c.Close()
		}
		l.conns = nil
	}
}

// load is 16 callers asking the civil registry, through the CNSS adapter,
// whether a citizen is alive (a mandate: no token), each query about a
// different citizen so that a record's ckey names its query.
type failure struct {
	caller int
	at     time.Time
	code   codes.Code
}

type load struct {
	client   civilv1.CivilRegistryClient
	next     atomic.Int64
	mu       sync.Mutex
	answered []int
	times    []time.Time // when each reply arrived
	failed   map[codes.Code]int
	failedAt []failure
	stop     context.CancelFunc
	wg       sync.WaitGroup
}

const (
	callers  = 16
	citizens = 20000
)

func startLoad(client civilv1.CivilRegistryClient) *load {
	l := &load{client: client, failed: map[codes.Code]int{}}
	ctx, stop := context.WithCancel(context.Background())
	l.stop = stop
	for caller := range callers {
		l.wg.Add(1)
		go func(caller int) {
			defer l.wg.Done()
			for ctx.Err() == nil {
				i := int(l.next.Add(1))
				if i >= citizens {
					return
				}
				cctx, cancel := context.WithTimeout(md(ctx, "jisr-purpose", "pension-continuity"), 5*time.Second)
				_, err := l.client.IsAlive(cctx, &civilv1.IsAliveRequest{Eid: eidN(i)})
				cancel()
				l.mu.Lock()
				if err == nil {
					l.answered = append(l.answered, i)
					l.times = append(l.times, time.Now())
				} else if ctx.Err() == nil {
					l.failed[status.Code(err)]++
					l.failedAt = append(l.failedAt, failure{caller, time.Now(), status.Code(err)})
				}
				l.mu.Unlock()
			}
		}(caller)
	}
	return l
}

func (l *load) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.answered)
}

func (l *load) failures() (int, map[codes.Code]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.failed {
		n += c
	}
	return n, maps(l.failed)
}

func maps(m map[codes.Code]int) map[codes.Code]int {
	out := map[codes.Code]int{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// failuresSince counts the failures since t, per caller and per code.
func (l *load) failuresSince(t time.Time) (perCaller map[int]int, perCode map[codes.Code]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	perCaller, perCode = map[int]int{}, map[codes.Code]int{}
	for _, f := range l.failedAt {
		if !f.at.Before(t) {
			perCaller[f.caller]++
			perCode[f.code]++
		}
	}
	return perCaller, perCode
}

// waitMore waits until n more replies have arrived.
func (l *load) waitMore(t *testing.T, n int, what string) {
	t.Helper()
	want := l.count() + n
	bustest.Eventually(t, 90*time.Second, func() error {
		if c := l.count(); c < want {
			return fmt.Errorf("%s: %d replies, waiting for %d", what, c, want)
		}
		return nil
	})
}

// gap is the longest time without a reply in [from, to].
func (l *load) gap(from, to time.Time) time.Duration {
	l.mu.Lock()
	ts := slices.Clone(l.times)
	l.mu.Unlock()
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	var longest time.Duration
	prev := from
	for _, x := range ts {
		if x.Before(from) {
			continue
		}
		if x.After(to) {
			break
		}
		longest = max(longest, x.Sub(prev))
		prev = x
	}
	return longest
}

// resume is the longest time without a reply in [from, to], and how long
// after from the reply that ended it arrived: after a failure at from, when
// queries resumed.
func (l *load) resume(from, to time.Time) (gap, after time.Duration) {
	l.mu.Lock()
	ts := slices.Clone(l.times)
	l.mu.Unlock()
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	prev := from
	for _, x := range ts {
		if x.Before(from) {
			continue
		}
		if x.After(to) {
			break
		}
		if d := x.Sub(prev); d > gap {
			gap, after = d, x.Sub(from)
		}
		prev = x
	}
	return gap, after
}

// streamInfo asks the hub, as the operator, about a stream.
func streamInfo(t *testing.T, js jetstream.JetStream, name string) *jetstream.StreamInfo {
	t.Helper()
	var info *jetstream.StreamInfo
	bustest.Eventually(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, name)
		if err != nil {
			return err
		}
		info, err = s.Info(ctx)
		if err == nil && (info.Cluster == nil || info.Cluster.Leader == "") {
			err = errors.New("no leader")
		}
		return err
	})
	return info
}

func nodeNamed(c *dev.Cluster, name string) *dev.HubNode {
	for _, n := range c.Info.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// restartNode starts a killed node again and waits until every stream has
// all its replicas current.
func restartNode(t *testing.T, js jetstream.JetStream, n *dev.HubNode) time.Duration {
	t.Helper()
	start := time.Now()
	if err := n.Proc.Start(); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 120*time.Second, func() error {
		resp, err := http.Get(n.Monitor + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		for _, s := range []string{subject.AuditStream, subject.CheckpointStream, subject.BucketStream(subject.ConsentBucket), subject.BucketStream(subject.RevocationBucket), subject.BucketStream(subject.UsageBucket)} {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			st, err := js.Stream(ctx, s)
			var info *jetstream.StreamInfo
			if err == nil {
				info, err = st.Info(ctx)
			}
			cancel()
			if err != nil {
				return err
			}
			if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
				return fmt.Errorf("%s: cluster %+v", s, info.Cluster)
			}
			for _, r := range info.Cluster.Replicas {
				if !r.Current || r.Offline || r.Lag != 0 {
					return fmt.Errorf("%s: replica %s current %v offline %v lag %d", s, r.Name, r.Current, r.Offline, r.Lag)
				}
			}
		}
		return nil
	})
	return time.Since(start)
}

// TestClusterSurvivesLosingANode runs the hub as `jisr dev --cluster 3`
// does — three `jisr nats-server` processes, two `jisr gateway` processes —
// and under 16 concurrent callers kills -9 the audit stream's leader node,
// then a gateway replica; revokes a consent while a node is down; and cuts
// a ministry's link. Every reply any caller received must have its audit
// record, and every log must verify.
func TestClusterSurvivesLosingANode(t *testing.T) {
	dir := t.TempDir()
	logs := &syncBuffer{}
	g := &process.Env{
		FederationPath: "../testdata/federation.yaml", CertsDir: filepath.Join(dir, "certs"), DataDir: dir,
		LogLevel: "info", Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	fed, err := g.Federation()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := process.InitCerts(g, fed); err != nil {
		t.Fatal(err)
	}
	taxLink := newLink(t)
	ctx := t.Context()
	o := dev.Options{
		Citizens: citizens, AnyPort: true, IdPAddr: "127.0.0.1:0", NATS: process.NATSOptions{Sync: "1s"},
		Cluster: dev.ClusterOptions{Nodes: 3, Gateways: 2, Exe: os.Args[0], Env: append(os.Environ(), "JISR_TEST_MAIN=1"),
			Link: func(m string) string {
				if m != "tax" {
					return ""
				}
				// The hub is placed by now: the link leads to its nodes.
				taxLink.mu.Lock()
				taxLink.targets = strings.Split(strings.ReplaceAll(g.NATSURL, "tls://", ""), ",")
				taxLink.mu.Unlock()
				return taxLink.URL()
			}},
	}
	started := time.Now()
	c, err := dev.StartCluster(ctx, g, o)
	if err != nil {
		t.Fatalf("jisr dev --cluster 3: %v\n%s", err, logs.String())
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_ = c.Stop(sctx, g)
		if t.Failed() {
			for _, p := range []string{"n1", "n2", "n3", "gw-1", "gw-2"} {
				b, _ := os.ReadFile(filepath.Join(c.Info.Logs, p+".log"))
				keep := strings.Split(string(b), "\n")
				t.Logf("== %s.log (last lines)\n%s", p, strings.Join(keep[max(0, len(keep)-40):], "\n"))
				var warn []string
				for _, l := range keep {
					if strings.HasPrefix(p, "gw") && (strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) || strings.Contains(l, "consent state") || strings.Contains(l, "NATS")) {
						warn = append(warn, l)
					}
				}
				if len(warn) > 0 {
					t.Logf("== %s.log (warnings and errors)\n%s", p, strings.Join(warn[max(0, len(warn)-60):], "\n"))
				}
			}
			t.Logf("== this process\n%s", logs.String())
		}
	})
	t.Logf("hub up in %s: %s", time.Since(started).Round(time.Millisecond), c.Info.NATSURL)

	op, opSrc, err := g.Connect(ctx, subject.Operator)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { op.Close(); opSrc.Close() }()
	js, err := jetstream.New(op)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{subject.AuditStream, subject.CheckpointStream, subject.BucketStream(subject.ConsentBucket), subject.BucketStream(subject.RevocationBucket), subject.BucketStream(subject.UsageBucket)} {
		info := streamInfo(t, js, s)
		if info.Config.Replicas != 3 || !info.Config.DenyDelete || !info.Config.DenyPurge {
			t.Fatalf("%s: replicas %d deny delete %v deny purge %v: want 3 replicas and no deletes or purges", s, info.Config.Replicas, info.Config.DenyDelete, info.Config.DenyPurge)
		}
	}

	adapterAddr := map[string]string{}
	for _, a := range c.Adapters {
		adapterAddr[a.Member()] = a.Addr()
	}
	dial := func(member string) *grpc.ClientConn {
		cc, err := grpc.NewClient(adapterAddr[member], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	cnss := dial("cnss")
	ld := startLoad(civilv1.NewCivilRegistryClient(cnss))
	defer func() { ld.stop(); ld.wg.Wait() }()
	ld.waitMore(t, 300, "load under way")

	// 1. kill -9 the node that leads the audit stream.
	leader := streamInfo(t, js, subject.AuditStream).Cluster.Leader
	victim := nodeNamed(c, leader)
	killedAt := time.Now()
	if err := victim.Proc.Kill(); err != nil {
		t.Fatal(err)
	}
	// When the stream has a new leader (JetStream's Raft election), polled
	// as the operator every 100 ms: the part of the pause that is NATS's.
	elected := make(chan time.Duration, 1)
	go func() {
		for time.Since(killedAt) < 60*time.Second {
			ictx, cancel := context.WithTimeout(context.Background(), time.Second)
			s, err := js.Stream(ictx, subject.AuditStream)
			var info *jetstream.StreamInfo
			if err == nil {
				info, err = s.Info(ictx)
			}
			cancel()
			if err == nil && info.Cluster != nil && info.Cluster.Leader != "" && info.Cluster.Leader != leader {
				elected <- time.Since(killedAt)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		elected <- -1
	}()
	ld.waitMore(t, 300, "queries after the audit leader's node was killed")
	newLeader := streamInfo(t, js, subject.AuditStream).Cluster.Leader
	gap, resumed := ld.resume(killedAt, time.Now())
	failed, codesSeen := ld.failures()
	t.Logf("MEASURED node kill: audit leader %s killed; new leader %s elected %s after the kill; queries resumed %s after the kill (longest time without a reply %s); %d queries failed (%v)",
		leader, newLeader, (<-elected).Round(time.Millisecond), resumed.Round(time.Millisecond), gap.Round(time.Millisecond), failed, codesSeen)
	if newLeader == leader {
		t.Fatalf("the audit stream is still led by the killed node %s", leader)
	}
	took := restartNode(t, js, victim)
	t.Logf("MEASURED node %s restarted and caught up (every stream's replicas current, lag 0) in %s", victim.Name, took.Round(time.Millisecond))

	// 2. kill -9 a gateway replica.
	ld.waitMore(t, 200, "load before the gateway kill")
	gw := c.Info.Gateways[0]
	gwKilled := time.Now()
	if err := gw.Proc.Kill(); err != nil {
		t.Fatal(err)
	}
	ld.waitMore(t, 300, "queries after a gateway replica was killed")
	// Callers whose query was in flight at the killed replica wait out their
	// deadline: at most one query per caller fails.
	bustest.Eventually(t, 30*time.Second, func() error { // in-flight queries end by their 5-second deadline
		if time.Since(gwKilled) < 6*time.Second {
			return errors.New("waiting out the callers' deadline")
		}
		return nil
	})
	perCaller, codesAfter := ld.failuresSince(gwKilled)
	lost := 0
	for _, n := range perCaller {
		lost += n
	}
	t.Logf("MEASURED gateway kill: %d queries failed (%v) from %d callers; longest time without a reply %s", lost, codesAfter, len(perCaller), ld.gap(gwKilled, time.Now()).Round(time.Millisecond))
	for caller, n := range perCaller {
		if n > 1 {
			t.Fatalf("caller %d lost %d queries after a gateway replica was killed; at most the one it had in flight may fail (%v)", caller, n, codesAfter)
		}
	}
	for code := range codesAfter {
		if code != codes.DeadlineExceeded && code != codes.Unavailable {
			t.Fatalf("queries failed with %v after the gateway kill: want only DeadlineExceeded (in flight) or Unavailable", codesAfter)
		}
	}
	if err := gw.Proc.Start(); err != nil { // it resumes its own audit log
		t.Fatal(err)
	}
	bustest.Eventually(t, 60*time.Second, func() error {
		resp, err := http.Get("http://" + gw.HTTP + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return bustest.Check(resp.StatusCode == 200, "gw-1 ready again")
	})
	ld.stop()
	ld.wg.Wait()

	// 3. A revocation made while a node is down is enforced by every replica.
	keyer, err := g.Keyer()
	if err != nil {
		t.Fatal(err)
	}
	eid := eidN(citizens - 1)
	linkEIDs := []string{eidN(citizens - 2), eidN(citizens - 3), eidN(citizens - 4)} // the income predicate allows 3 queries a citizen a day
	tokens, err := dev.Consents(ctx, fed, keyer, c.Consent.Service, append([]string{eid}, linkEIDs...))
	if err != nil {
		t.Fatal(err)
	}
	var tok *dev.Token
	for i := range tokens {
		if tokens[i].Consumer == "cnss" && tokens[i].Provider == "civil-registry" && tokens[i].Citizen == eid {
			tok = &tokens[i]
		}
	}
	// person asks through an adapter, cc.
	person := func(cc *grpc.ClientConn) error {
		cctx, cancel := context.WithTimeout(md(ctx, "jisr-purpose", tok.Purpose, "jisr-consent", tok.Token), 5*time.Second)
		defer cancel()
		_, err := civilv1.NewCivilRegistryClient(cc).GetPerson(cctx, &civilv1.GetPersonRequest{Eid: eid})
		return err
	}
	if err := person(cnss); err != nil {
		t.Fatalf("GetPerson with a fresh token: %v", err)
	}
	revLeader := nodeNamed(c, streamInfo(t, js, subject.BucketStream(subject.RevocationBucket)).Cluster.Leader)
	if err := revLeader.Proc.Kill(); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 60*time.Second, func() error { // the bucket elects a new leader
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := c.Consent.Service.RevokeFor(rctx, keyer.CKey(eid), tok.JTI)
		return err
	})
	revokedAt := time.Now()
	// NATS hands a query to a gateway replica on the asking adapter's own
	// node when there is one: to reach each replica, ask through a CNSS
	// adapter connected to that replica's node only.
	var live []string
	for _, n := range c.Info.Nodes {
		if n != revLeader {
			live = append(live, n.Monitor)
		}
	}
	var st *process.Status
	bustest.Eventually(t, 60*time.Second, func() error {
		var err error
		st, err = process.HubStatus(ctx, g, live)
		if err != nil {
			return err
		}
		instances := map[string]bool{}
		for _, gw := range st.Gateways {
			instances[gw.Instance] = true
		}
		return bustest.Check(len(instances) == 2 && len(st.Gateways) == 2, fmt.Sprintf("gateway replicas connected: %v", st.Gateways))
	})
	var ccs []*grpc.ClientConn
	for _, gwst := range st.Gateways {
		var url string
		for _, n := range c.Info.Nodes {
			if n.Name == gwst.Node {
				url = n.ClientURL
			}
		}
		// With a node down, the adapter's look-up of its event stream waits
		// for that stream's leader election: start it again until it is over.
		var a *process.AdapterNode
		bustest.Eventually(t, 60*time.Second, func() error {
			var err error
			a, err = process.StartAdapter(ctx, g, process.AdapterOptions{Member: "cnss", Listen: "127.0.0.1:0", NATSURL: url})
			return err
		})
		t.Cleanup(func() { _ = a.Stop(context.Background()) })
		cc, err := grpc.NewClient(a.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		ccs = append(ccs, cc)
	}
	// The revoked token is never accepted again: refused as revoked, or,
	// while a replica cannot confirm its view of revocations is current (the
	// node it watched them on is gone), refused as every token is. Both
	// replicas must refuse it as revoked, by their audit records.
	bustest.Eventually(t, 90*time.Second, func() error {
		for _, cc := range ccs {
			if err := person(cc); status.Code(err) != codes.PermissionDenied && status.Code(err) != codes.Unavailable {
				t.Fatalf("a revoked token: %v, want PermissionDenied (revoked) or Unavailable (consent state not confirmed)", err)
			}
		}
		by, err := revokedRefusals(ctx, g, tok.JTI)
		if err != nil {
			return err
		}
		return bustest.Check(by["gw-1"] && by["gw-2"], fmt.Sprintf("refused as revoked (%s) by %v; want both replicas", consent.ReasonRevoked, by))
	})
	t.Logf("MEASURED revocation with node %s down: both replicas refused it as revoked %s after the revocation", revLeader.Name, time.Since(revokedAt).Round(time.Millisecond))
	restartNode(t, js, revLeader)

	// 4. A ministry's link cut and restored.
	taxCC := dial("tax")
	affiliation := func() error {
		cctx, cancel := context.WithTimeout(md(ctx, "jisr-purpose", "income-verification"), 5*time.Second)
		defer cancel()
		_, err := cnssv1.NewSocialSecurityClient(taxCC).GetAffiliation(cctx, &cnssv1.GetAffiliationRequest{Eid: eidN(5)})
		return err
	}
	// cnss asks tax, each time about another citizen (with their consent).
	incomeBelow := func(i int) error {
		var taxTok *dev.Token
		for j := range tokens {
			if tokens[j].Consumer == "cnss" && tokens[j].Provider == "tax" && tokens[j].Citizen == linkEIDs[i] {
				taxTok = &tokens[j]
			}
		}
		cctx, cancel := context.WithTimeout(md(ctx, "jisr-purpose", taxTok.Purpose, "jisr-consent", taxTok.Token), 5*time.Second)
		defer cancel()
		_, err := taxv1.NewTaxClient(cnss).IsIncomeBelow(cctx, &taxv1.IsIncomeBelowRequest{Eid: linkEIDs[i], Year: 2025})
		return err
	}
	bustest.Eventually(t, 60*time.Second, affiliation) // tax asks cnss, before the cut (the restarted node has its routes' interest)
	if err := incomeBelow(0); err != nil {
		t.Fatalf("cnss asks tax before the cut: %v", err)
	}
	taxLink.setCut(true)
	bustest.Eventually(t, 30*time.Second, func() error {
		a := status.Code(affiliation())
		return bustest.Check(a == codes.Unavailable, fmt.Sprintf("with tax's link cut: tax's own query %v; want Unavailable", a))
	})
	if err := incomeBelow(1); status.Code(err) != codes.Unavailable {
		t.Fatalf("cnss asks tax while tax's link is cut: %v, want Unavailable", err)
	}
	cut := time.Now()
	for range 5 {
		if err := affiliation(); status.Code(err) != codes.Unavailable {
			t.Fatalf("tax's own query with its link cut: %v, want Unavailable", err)
		}
	}
	if d := time.Since(cut); d > 4*time.Second {
		t.Logf("note: 5 queries over a cut link took %s", d)
	}
	others := startLoad(civilv1.NewCivilRegistryClient(cnss))
	others.next.Store(int64(ld.next.Load()))
	others.waitMore(t, 200, "cnss asks the civil registry while tax's link is cut")
	others.stop()
	others.wg.Wait()
	if n, cs := others.failures(); n > 0 {
		t.Fatalf("with tax's link cut, %d of the other members' queries failed: %v", n, cs)
	}
	taxLink.setCut(false)
	bustest.Eventually(t, 60*time.Second, affiliation)
	if err := incomeBelow(2); err != nil {
		t.Fatalf("cnss asks tax after tax's link was restored: %v", err)
	}

	// Every reply a caller received has its record; every log verifies.
	allowed := allowedByCKey(t, g)
	for _, l := range []*load{ld, others} {
		for _, i := range l.answered {
			if allowed[keyer.CKey(eidN(i))] == 0 {
				t.Fatalf("citizen %d got a reply but has no audit record", i)
			}
		}
	}
	t.Logf("%d + %d replies, every one with its record", len(ld.answered), len(others.answered))
	// A node restarted a moment ago may still be settling its streams'
	// leaders: the command is retried while it fails, and must pass.
	cli := func(args ...string) (string, error) {
		root := newRootCmd()
		var out syncBuffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"--federation", g.FederationPath, "--certs", g.CertsDir, "--data", dir, "--nats", g.NATSURL, "--log-level", "error"}, args...))
		err := root.ExecuteContext(context.Background())
		return out.String(), err
	}
	var report string
	bustest.Eventually(t, 60*time.Second, func() (err error) {
		report, err = cli("audit", "verify")
		return err
	})
	t.Logf("audit verify:\n%s", report)
	// jisr status sees the whole hub, healthy again.
	bustest.Eventually(t, 60*time.Second, func() (err error) {
		report, err = cli("status", "--monitor", monitorsOf(c))
		if err != nil {
			return fmt.Errorf("%w\n%s", err, report)
		}
		return nil
	})
	t.Logf("jisr status:\n%s", report)
	js2, err := cli("status", "--json", "--monitor", monitorsOf(c))
	specs, serr := natsstate.All(stream.Config{}) // every stream and bucket `jisr nats init` creates
	if serr != nil {
		t.Fatal(serr)
	}
	var st2 process.Status
	if err != nil || json.Unmarshal([]byte(js2), &st2) != nil || !st2.Healthy || len(st2.Nodes) != 3 || len(st2.Streams) != len(specs) || len(st2.Members) != len(fed.Members) {
		t.Fatalf("jisr status --json: %v\n%s", err, js2)
	}
	for _, s := range st2.Streams {
		if s.Replicas != 3 || len(s.Peers) != 2 {
			t.Fatalf("jisr status --json: stream %+v, want 3 replicas", s)
		}
	}
	// Each connected member's SVID expiry is the one its connection
	// presented, as the node reports it.
	for _, m := range st2.Members {
		if len(m.Connected) > 0 && (m.SVIDExpires == nil || !strings.HasPrefix(m.SVIDSource, "connection on ")) {
			t.Fatalf("jisr status --json: member %s: SVID expiry %v from %q, want the one its connection presented", m.Member, m.SVIDExpires, m.SVIDSource)
		}
	}
	for _, want := range []string{"gw-1", "gw-2", "JISR_AUDIT", "healthy"} {
		if !strings.Contains(report, want) {
			t.Fatalf("jisr status does not show %q:\n%s", want, report)
		}
	}
}

// scanRecords reads every audit record as the auditor.
func scanRecords(ctx context.Context, g *process.Env, f func(*auditv1.Record)) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	records, closeFn, err := auditorRecords(ctx, g)
	if err != nil {
		return err
	}
	defer closeFn()
	return stream.Scan(ctx, records, stream.ScanOptions{}, func(m stream.Msg) error {
		// A message holds a batch of records (format 2) or one (format 1).
		_, _, _, recs, err := record.Stored(m.Subject, m.Header, m.Data)
		if err != nil {
			return err
		}
		for _, data := range recs {
			r, err := record.Parse(data)
			if err != nil {
				return err
			}
			f(r)
		}
		return nil
	})
}

// revokedRefusals are the gateway replicas (audit logs) that refused the
// token as revoked.
func revokedRefusals(ctx context.Context, g *process.Env, jti string) (map[string]bool, error) {
	out := map[string]bool{}
	err := scanRecords(ctx, g, func(r *auditv1.Record) {
		if r.GetTokenId() == jti && r.GetDecision() != auditv1.Decision_DECISION_ALLOWED && r.GetReason() == consent.ReasonRevoked {
			out[r.GetLogId()] = true
		}
	})
	return out, err
}

// allowedByCKey counts the allowed records of each citizen key.
func allowedByCKey(t *testing.T, g *process.Env) map[string]int {
	out := map[string]int{}
	if err := scanRecords(t.Context(), g, func(r *auditv1.Record) {
		if r.GetDecision() == auditv1.Decision_DECISION_ALLOWED {
			out[r.GetCkey()]++
		}
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func monitorsOf(c *dev.Cluster) string {
	var ms []string
	for _, n := range c.Info.Nodes {
		ms = append(ms, n.Monitor)
	}
	return strings.Join(ms, ",")
}
