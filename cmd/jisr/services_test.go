package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/catalog"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/jisr-bus/jisr/proto/services"
)

// The catalogue: `jisr services --as`, the providers' NATS micro
// registrations (read by the operator only, unforgeable by another member),
// and the consumer adapter's reflection limited to what its member may call.
func TestServicesCatalogue(t *testing.T) {
	f := startDev(t)

	// jisr services --as cnss: only CNSS's rules, with bases, purposes, fields.
	var out bytes.Buffer
	root := newRootCmd()
	root.SetOut(&out)
	root.SetArgs([]string{"--federation", "../testdata/federation.yaml", "services", "--as", "cnss"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"cnss-civil-status", "cnss-death-check", "mandate (", "amo-enrolment", "household.members.relation", "IsAlive?"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("jisr services --as cnss lacks %q:\n%s", want, out.String())
		}
	}
	for _, not := range []string{"tax-civil-status", "health-amo-coverage", "civil-registry-entitlement"} {
		if strings.Contains(out.String(), not) {
			t.Fatalf("jisr services --as cnss lists another consumer's rule %q:\n%s", not, out.String())
		}
	}

	// Live: the operator finds every provider, running the federation's schema.
	g := &process.Env{FederationPath: f.g.FederationPath, CertsDir: f.g.CertsDir, NATSURL: f.demo.Endpoints["nats"], Log: slog.New(slog.DiscardHandler)}
	fed, err := g.Federation()
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.New(fed, services.All())
	if err != nil {
		t.Fatal(err)
	}
	digest := map[string]string{}
	var providers []string
	for _, o := range cat.Directory(fed) {
		digest[o.Member] = o.Digest
		providers = append(providers, o.Member)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	op, src, err := g.Connect(ctx, subject.Operator)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { op.Close(); src.Close() }()
	infos, err := catalog.Discover(ctx, op, providers)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, in := range infos {
		m := in.Metadata[catalog.MetaMember]
		got = append(got, m)
		if in.Metadata[catalog.MetaDigests] != digest[m] || in.Version != "1.0.0" || !strings.Contains(in.Metadata[catalog.MetaMethods], "/") {
			t.Fatalf("%s registered %+v, want digest %s", m, in, digest[m])
		}
	}
	sort.Strings(got)
	want := slices.Clone(providers)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("registered providers %v, want %v", got, want)
	}

	// A member may neither ask the catalogue (a provider's answer would be a
	// channel around the gateway) nor listen where another member answers.
	violations := make(chan error, 4)
	cnss, csrc, err := g.Connect(ctx, "cnss", nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cnss.Close(); csrc.Close() }()
	if _, err := cnss.Request(subject.Discovery+".INFO.jisr-civil-registry", nil, 500*time.Millisecond); err == nil {
		t.Fatal("cnss asked the catalogue and got an answer")
	}
	if _, err := cnss.SubscribeSync(subject.Discovery + ".INFO.jisr-civil-registry"); err != nil {
		t.Fatal(err)
	}
	_ = cnss.Flush()
	for _, verb := range []string{"Publish", "Subscription"} {
		bustest.Eventually(t, 10*time.Second, func() error {
			select {
			case err := <-violations:
				if !strings.Contains(strings.ToLower(err.Error()), "permissions violation for "+strings.ToLower(verb)) {
					return errors.New("unexpected error " + err.Error())
				}
				return nil
			default:
				return errors.New("no permissions violation for the " + verb)
			}
		})
	}

	// CNSS's adapter reflects only what CNSS may call.
	names, hiddenErr := reflect(t, f.dial(t, "cnss"), "jisr.cnss.v1.SocialSecurity")
	for _, s := range []string{"jisr.civilregistry.v1.CivilRegistry", "jisr.tax.v1.Tax", "jisr.health.v1.Health", "grpc.health.v1.Health"} {
		if !slices.Contains(names, s) {
			t.Fatalf("cnss's adapter does not reflect %s: %v", s, names)
		}
	}
	if slices.Contains(names, "jisr.cnss.v1.SocialSecurity") {
		t.Fatalf("cnss's adapter reflects a service no rule lets CNSS call: %v", names)
	}
	if hiddenErr == "" {
		t.Fatal("cnss's adapter resolves the file of a service CNSS may not call")
	}
	// The civil registry may call only health.
	names, _ = reflect(t, f.dial(t, "civil-registry"), "")
	if slices.Contains(names, "jisr.tax.v1.Tax") || !slices.Contains(names, "jisr.health.v1.Health") {
		t.Fatalf("civil-registry's adapter reflects %v", names)
	}
}

// reflect lists a server's services, and resolves symbol (when given),
// returning the error message of that resolution ("" when it resolved).
func reflect(t *testing.T, cc *grpc.ClientConn, symbol string) ([]string, string) {
	t.Helper()
	stream, err := rpb.NewServerReflectionClient(cc).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer stream.CloseSend()
	if err := stream.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if symbol == "" {
		return names, ""
	}
	if err := stream.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: symbol}}); err != nil {
		t.Fatal(err)
	}
	resp, err = stream.Recv()
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return names, resp.GetErrorResponse().GetErrorMessage()
}
