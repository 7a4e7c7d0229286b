package backend_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	cnssv1 "github.com/jisr-bus/jisr/proto/gen/jisr/cnss/v1"
	healthv1 "github.com/jisr-bus/jisr/proto/gen/jisr/health/v1"
	taxv1 "github.com/jisr-bus/jisr/proto/gen/jisr/tax/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
	"github.com/jisr-bus/jisr/services/backend"
	"github.com/jisr-bus/jisr/services/demodata"
	"github.com/jisr-bus/jisr/services/store"
)

const population = 2000

// serve starts every reference backend on real loopback listeners.
func serve(t *testing.T, dir string) map[string]*grpc.ClientConn {
	t.Helper()
	out := map[string]*grpc.ClientConn{}
	for _, m := range backend.Members() {
		b, err := backend.New(context.Background(), m, dir, backend.WithStore(store.WithCitizens(population)))
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go b.Serve(lis)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			b.Stop(ctx)
		})
		cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		out[m] = cc
	}
	return out
}

func TestMinistriesAgreeAboutEveryCitizen(t *testing.T) {
	t.Parallel()
	cc := serve(t, t.TempDir())
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	civil := civilv1.NewCivilRegistryClient(cc["civil-registry"])
	taxc := taxv1.NewTaxClient(cc["tax"])
	cnss := cnssv1.NewSocialSecurityClient(cc["cnss"])
	health := healthv1.NewHealthClient(cc["health"])
	var checked, deceased, tadamon int
	for i := 0; i < population; i += 7 {
		eid := demodata.EID(demodata.DefaultSeed, i)
		p, err := civil.GetPerson(ctx, &civilv1.GetPersonRequest{Eid: strings.ToLower(eid)})
		if err != nil {
			t.Fatalf("GetPerson %d: %v", i, err)
		}
		alive, err := civil.IsAlive(ctx, &civilv1.IsAliveRequest{Eid: eid})
		if err != nil {
			t.Fatal(err)
		}
		dead := p.GetPerson().GetVitalStatus() == civilv1.VitalStatus_VITAL_STATUS_DECEASED
		if alive.GetAlive() == dead || p.GetPerson().GetNames().GetArabic().GetGiven() == "" {
			t.Fatalf("%d: inconsistent civil record %v", i, p)
		}
		ins, err := cnss.IsInsured(ctx, &cnssv1.IsInsuredRequest{Eid: eid})
		if err != nil {
			t.Fatal(err)
		}
		ent, err := health.GetInsuranceEntitlement(ctx, &healthv1.GetInsuranceEntitlementRequest{Eid: eid})
		if err != nil {
			t.Fatal(err)
		}
		last, err := taxc.GetIncomeSummary(ctx, &taxv1.GetIncomeSummaryRequest{Eid: eid, Year: demodata.LastYear})
		if err != nil {
			t.Fatal(err)
		}
		if dead {
			deceased++
			if ins.GetInsured() || ent.GetEntitlement().GetEntitled() || last.GetSummary().GetDeclared() {
				t.Fatalf("%d: a deceased citizen is insured, entitled or declares income", i)
			}
			continue
		}
		// Insured at CNSS ⇒ entitled at the health ministry (CNSS or Tadamon).
		if ins.GetInsured() && !ent.GetEntitlement().GetEntitled() {
			t.Fatalf("%d: insured at CNSS but not entitled to care", i)
		}
		cov, _ := cnss.GetAmoCoverage(ctx, &cnssv1.GetAmoCoverageRequest{Eid: eid})
		if cov.GetCoverage().GetScheme() == cnssv1.AmoScheme_AMO_SCHEME_TADAMON {
			tadamon++
			below, err := taxc.IsIncomeBelow(ctx, &taxv1.IsIncomeBelowRequest{Eid: eid, Year: demodata.LastYear, ThresholdMinorUnits: demodata.LowIncomeThreshold})
			if err != nil || !below.GetBelow() {
				t.Fatalf("%d: AMO Tadamon but income not below the threshold (%v)", i, err)
			}
			if ent.GetEntitlement().GetInsurer() != healthv1.Insurer_INSURER_AMO_TADAMON {
				t.Fatalf("%d: Tadamon at CNSS, %v at health", i, ent.GetEntitlement().GetInsurer())
			}
		}
		// Every household member exists in the register, with the same vital status.
		h, err := civil.GetHousehold(ctx, &civilv1.GetHouseholdRequest{Eid: eid})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, m := range h.GetHousehold().GetMembers() {
			mp, err := civil.GetPerson(ctx, &civilv1.GetPersonRequest{Eid: m.GetEid()})
			if err != nil {
				t.Fatalf("%d: household member missing: %v", i, err)
			}
			if (mp.GetPerson().GetVitalStatus() == civilv1.VitalStatus_VITAL_STATUS_ALIVE) != m.GetAlive() {
				t.Fatalf("%d: household member vital status disagrees", i)
			}
			found = found || m.GetEid() == eid
		}
		if !found {
			t.Fatalf("%d: not in their own household", i)
		}
		if p.GetPerson().GetMaritalStatus() == civilv1.MaritalStatus_MARITAL_STATUS_MARRIED {
			married, _ := civil.IsMarried(ctx, &civilv1.IsMarriedRequest{Eid: eid})
			if !married.GetMarried() {
				t.Fatalf("%d: married person not married by predicate", i)
			}
		}
		checked++
	}
	if deceased == 0 || tadamon == 0 || checked < 200 {
		t.Fatalf("too few cases: %d alive checked, %d deceased, %d Tadamon", checked, deceased, tadamon)
	}
	// The other methods answer for the first citizen.
	eid := demodata.EID(demodata.DefaultSeed, 0)
	if _, err := civil.GetBirthAct(ctx, &civilv1.GetBirthActRequest{Eid: eid}); err != nil {
		t.Fatal(err)
	}
	if _, err := taxc.GetTaxClearance(ctx, &taxv1.GetTaxClearanceRequest{Eid: eid}); err != nil {
		t.Fatal(err)
	}
	if _, err := cnss.GetAffiliation(ctx, &cnssv1.GetAffiliationRequest{Eid: eid}); err != nil {
		t.Fatal(err)
	}
	if _, err := cnss.GetContributions(ctx, &cnssv1.GetContributionsRequest{Eid: eid, From: &jisrv1.Date{Year: 2024, Month: 1, Day: 1}, To: &jisrv1.Date{Year: 2024, Month: 12, Day: 31}}); err != nil {
		t.Fatal(err)
	}
	if _, err := health.GetDisabilityStatus(ctx, &healthv1.GetDisabilityStatusRequest{Eid: eid}); err != nil {
		t.Fatal(err)
	}
}

func TestErrorsNeverRepeatTheEID(t *testing.T) {
	t.Parallel()
	cc := serve(t, t.TempDir())
	ctx := t.Context()
	civil := civilv1.NewCivilRegistryClient(cc["civil-registry"])
	const unknown = "QQ999999"
	for _, tc := range []struct {
		eid  string
		code codes.Code
	}{{unknown, codes.NotFound}, {"", codes.InvalidArgument}} {
		_, err := civil.GetPerson(ctx, &civilv1.GetPersonRequest{Eid: tc.eid})
		if status.Code(err) != tc.code || tc.eid != "" && strings.Contains(status.Convert(err).Message(), tc.eid) {
			t.Errorf("GetPerson(%q) = %v", tc.eid, err)
		}
	}
	_, err := taxv1.NewTaxClient(cc["tax"]).GetIncomeSummary(ctx, &taxv1.GetIncomeSummaryRequest{Eid: unknown, Year: 2024})
	if status.Code(err) != codes.NotFound || strings.Contains(err.Error(), unknown) {
		t.Errorf("tax: %v", err)
	}
	_, err = taxv1.NewTaxClient(cc["tax"]).IsIncomeBelow(ctx, &taxv1.IsIncomeBelowRequest{Eid: demodata.EID(1, 0), Year: 1990, ThresholdMinorUnits: 1})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad year: %v", err)
	}
	_, err = cnssv1.NewSocialSecurityClient(cc["cnss"]).IsInsured(ctx, &cnssv1.IsInsuredRequest{Eid: unknown})
	if status.Code(err) != codes.NotFound || strings.Contains(err.Error(), unknown) {
		t.Errorf("cnss: %v", err)
	}
	_, err = healthv1.NewHealthClient(cc["health"]).HasDisability(ctx, &healthv1.HasDisabilityRequest{Eid: unknown})
	if status.Code(err) != codes.NotFound || strings.Contains(err.Error(), unknown) {
		t.Errorf("health: %v", err)
	}
	h, err := healthpb.NewHealthClient(cc["tax"]).Check(ctx, &healthpb.HealthCheckRequest{Service: "jisr.tax.v1.Tax"})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health check: %v %v", h, err)
	}
}

func TestReopenDoesNotReseed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	open := func(n int) time.Duration {
		seeded := false
		start := time.Now()
		b, err := backend.New(context.Background(), "civil-registry", dir, backend.WithStore(store.WithCitizens(n),
			store.WithProgress(func(done, total int) { seeded = seeded || done < total })))
		if err != nil {
			t.Fatal(err)
		}
		b.Stop(context.Background())
		if seeded {
			return -time.Since(start)
		}
		return time.Since(start)
	}
	if d := open(400); d >= 0 {
		t.Fatal("the first open did not seed")
	}
	info1, _ := os.Stat(filepath.Join(dir, "civil-registry.db"))
	if d := open(400); d < 0 {
		t.Fatal("reopening the same population reseeded")
	}
	info2, _ := os.Stat(filepath.Join(dir, "civil-registry.db"))
	if !info1.ModTime().Equal(info2.ModTime()) {
		t.Fatal("the store file was rewritten")
	}
	if d := open(800); d >= 0 {
		t.Fatal("a new population did not reseed")
	}
	if _, err := backend.New(context.Background(), "ministry-of-magic", dir); err == nil {
		t.Fatal("unknown member accepted")
	}
}

// BenchmarkGetPerson calls the civil registry's GetPerson over loopback
// gRPC from GOMAXPROCS goroutines; BenchmarkGetPersonC128 from 64 per
// GOMAXPROCS (c=128 on two cores, as `jisr bench` loads it). Allocations
// and cpu-ns/op are the whole process's: the client's and the server's.
func BenchmarkGetPerson(b *testing.B) { benchGetPerson(b, 1) }

func BenchmarkGetPersonC128(b *testing.B) { benchGetPerson(b, 64) }

func benchGetPerson(b *testing.B, parallelism int) {
	dir := b.TempDir()
	be, err := backend.New(context.Background(), "civil-registry", dir, backend.WithStore(store.WithCitizens(10000)))
	if err != nil {
		b.Fatal(err)
	}
	defer be.Stop(context.Background())
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	go be.Serve(lis)
	cc, _ := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer cc.Close()
	c := civilv1.NewCivilRegistryClient(cc)
	ctx := b.Context()
	b.SetParallelism(parallelism)
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := c.GetPerson(ctx, &civilv1.GetPersonRequest{Eid: demodata.EID(demodata.DefaultSeed, i%10000)}); err != nil {
				b.Fatal(err)
			}
			i += 7
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op") // the process's CPU per call
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
