//go:build postgres

package sql_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus/bustest"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	sqlbackend "github.com/jisr-bus/jisr/services/backend/sql"
	"github.com/jisr-bus/jisr/services/backend/sql/demo"
	"github.com/jisr-bus/jisr/services/backend/sql/pgtest"
	"github.com/jisr-bus/jisr/services/civilregistry"
	"github.com/jisr-bus/jisr/services/demodata"
	"github.com/jisr-bus/jisr/services/store"
)

const citizens = 400

// serve starts the SQL backend for cfg on a loopback port.
func serve(t *testing.T, cfg *sqlbackend.Config) (*sqlbackend.Backend, *grpc.ClientConn) {
	t.Helper()
	b, err := sqlbackend.New(t.Context(), cfg, sqlbackend.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := b.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go b.Serve(lis)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b.Stop(ctx)
	})
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return b, cc
}

func loaded(t *testing.T) *pgtest.Server {
	t.Helper()
	pg := pgtest.Start(t)
	if err := demo.Load(t.Context(), pg.URL, citizens, demodata.DefaultSeed); err != nil {
		t.Fatal(err)
	}
	return pg
}

// The civil registry answered from PostgreSQL through the mapping is, for
// every method and every citizen, what the reference backend answers from
// its SQLite store over the same synthetic population.
func TestCivilRegistryFromPostgresMatchesTheReference(t *testing.T) {
	pg := loaded(t)
	// Loading twice is a no-op; the data stay.
	if err := demo.Load(t.Context(), pg.URL, citizens, demodata.DefaultSeed); err != nil {
		t.Fatal(err)
	}
	cfg, err := demo.CivilRegistry(pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, cc := serve(t, cfg)
	got := civilv1.NewCivilRegistryClient(cc)
	ref, err := civilregistry.Open(t.Context(), t.TempDir()+"/civil.db", store.WithCitizens(citizens), store.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()

	ctx := t.Context()
	var deceased, married, notes int
	for i := 0; i < citizens; i += 3 {
		eid := demodata.EID(demodata.DefaultSeed, i)
		c := demodata.Get(demodata.DefaultSeed, i)
		if c.Deceased {
			deceased++
		}
		if c.Marital == demodata.Married {
			married++
		}
		for _, call := range []struct {
			name     string
			got, ref func() (proto.Message, error)
		}{
			{"GetPerson", func() (proto.Message, error) { return got.GetPerson(ctx, &civilv1.GetPersonRequest{Eid: eid}) },
				func() (proto.Message, error) { return ref.GetPerson(ctx, &civilv1.GetPersonRequest{Eid: eid}) }},
			{"GetBirthAct", func() (proto.Message, error) { return got.GetBirthAct(ctx, &civilv1.GetBirthActRequest{Eid: eid}) },
				func() (proto.Message, error) { return ref.GetBirthAct(ctx, &civilv1.GetBirthActRequest{Eid: eid}) }},
			{"GetHousehold", func() (proto.Message, error) { return got.GetHousehold(ctx, &civilv1.GetHouseholdRequest{Eid: eid}) },
				func() (proto.Message, error) { return ref.GetHousehold(ctx, &civilv1.GetHouseholdRequest{Eid: eid}) }},
			{"IsAlive", func() (proto.Message, error) { return got.IsAlive(ctx, &civilv1.IsAliveRequest{Eid: eid}) },
				func() (proto.Message, error) { return ref.IsAlive(ctx, &civilv1.IsAliveRequest{Eid: eid}) }},
			{"IsMarried", func() (proto.Message, error) { return got.IsMarried(ctx, &civilv1.IsMarriedRequest{Eid: eid}) },
				func() (proto.Message, error) { return ref.IsMarried(ctx, &civilv1.IsMarriedRequest{Eid: eid}) }},
		} {
			g, err := call.got()
			if err != nil {
				t.Fatalf("%s citizen %d from PostgreSQL: %v", call.name, i, err)
			}
			r, err := call.ref()
			if err != nil {
				t.Fatalf("%s citizen %d from the reference: %v", call.name, i, err)
			}
			if !proto.Equal(g, r) {
				t.Fatalf("%s citizen %d:\n postgres  %v\n reference %v", call.name, i, g, r)
			}
			if a, ok := g.(*civilv1.GetBirthActResponse); ok && len(a.GetBirthAct().GetMarginalNotes()) > 0 {
				notes++
			}
		}
	}
	if deceased == 0 || married == 0 || notes == 0 {
		t.Fatalf("the sample has %d deceased, %d married, %d acts with notes: it covers too little", deceased, married, notes)
	}

	// Unknown citizens and hostile eIDs: NotFound, the eID in no message.
	for _, eid := range []string{"ZZ999999", "X' OR '1'='1", "'; DROP TABLE civil.person; --"} {
		_, err := got.GetPerson(ctx, &civilv1.GetPersonRequest{Eid: eid})
		if status.Code(err) != codes.NotFound || strings.Contains(status.Convert(err).Message(), eid) {
			t.Fatalf("GetPerson(%q): %v", eid, err)
		}
		_, err = got.IsAlive(ctx, &civilv1.IsAliveRequest{Eid: eid})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("IsAlive(%q): %v", eid, err)
		}
	}
	if _, err := got.GetPerson(ctx, &civilv1.GetPersonRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no eID: %v", err)
	}
	if _, err := got.GetPerson(ctx, &civilv1.GetPersonRequest{Eid: demodata.EID(demodata.DefaultSeed, 0)}); err != nil {
		t.Fatalf("the table is gone after the hostile eIDs: %v", err)
	}
}

// The pool runs every session read-only and bounds every statement; health
// follows the database.
func TestStatementTimeoutReadOnlyAndHealth(t *testing.T) {
	pg := loaded(t)
	cfg, err := sqlbackend.ParseConfig([]byte(`
member: civil-registry
service: jisr.civilregistry.v1.CivilRegistry
register: civil registry
database: {statement_timeout: 300ms, health_interval: 100ms}
methods:
  IsAlive:
    params: [eid]
    predicate: pg_sleep(5) IS NOT NULL
    from: civil.person WHERE eid = $1
  IsMarried:
    params: [eid]
    sql: DELETE FROM civil.person WHERE eid = $1 RETURNING false AS married
    columns: {married: married}
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database.URL = pg.URL
	_, cc := serve(t, cfg)
	client := civilv1.NewCivilRegistryClient(cc)
	eid := demodata.EID(demodata.DefaultSeed, 1)
	begin := time.Now()
	_, err = client.IsAlive(t.Context(), &civilv1.IsAliveRequest{Eid: eid})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a 5 s query under a 300 ms statement timeout: %v", err)
	}
	t.Logf("timed out after %s", time.Since(begin))
	_, err = client.IsMarried(t.Context(), &civilv1.IsMarriedRequest{Eid: eid})
	if status.Code(err) != codes.Internal {
		t.Fatalf("a DELETE through the mapping: %v", err)
	}
	var n int
	pgConn(t, pg, "SELECT count(*) FROM civil.person WHERE eid = $1", eid).Scan(&n)
	if n != 1 {
		t.Fatal("the mapping's DELETE removed the row: the session is not read-only")
	}
	_, err = client.GetPerson(t.Context(), &civilv1.GetPersonRequest{Eid: eid})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("an unmapped method: %v", err)
	}

	health := healthpb.NewHealthClient(cc)
	check := func(want healthpb.HealthCheckResponse_ServingStatus) func() error {
		return func() error {
			r, err := health.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "jisr.civilregistry.v1.CivilRegistry"})
			if err != nil {
				return err
			}
			if r.Status != want {
				return fmt.Errorf("health %v, want %v", r.Status, want)
			}
			return nil
		}
	}
	bustest.Eventually(t, 10*time.Second, check(healthpb.HealthCheckResponse_SERVING))
	pg.Stop()
	bustest.Eventually(t, 30*time.Second, check(healthpb.HealthCheckResponse_NOT_SERVING))
	_, err = client.IsMarried(t.Context(), &civilv1.IsMarriedRequest{Eid: eid})
	if c := status.Code(err); c != codes.Unavailable {
		t.Fatalf("with the database down: %v", err)
	}
}

type row interface{ Scan(...any) error }

func pgConn(t *testing.T, pg *pgtest.Server, q string, args ...any) row {
	t.Helper()
	conn, err := pgxConnect(t.Context(), pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn.QueryRow(t.Context(), q, args...)
}

// A mapping that does not fit the database or the descriptors stops New,
// naming the method and the field.
func TestMappingCheckedAgainstTheDatabase(t *testing.T) {
	pg := loaded(t)
	for _, tc := range []struct{ name, methods, want string }{
		{"column not mapped", `GetPerson: {params: [eid], sql: "SELECT eid, sex FROM civil.person WHERE eid = $1", columns: {eid: person.eid}}`, `returns column "sex"`},
		{"mapped column not returned", `GetPerson: {params: [eid], sql: "SELECT eid FROM civil.person WHERE eid = $1", columns: {eid: person.eid, sex: person.sex}}`, `"sex", which the query does not return`},
		{"type mismatch", `GetPerson: {params: [eid], sql: "SELECT deceased AS eid FROM civil.person WHERE eid = $1", columns: {eid: person.eid}}`, "bool column cannot fill"},
		{"parameter count", `GetPerson: {params: [eid], sql: "SELECT eid FROM civil.person WHERE eid = $1 OR eid = $2", columns: {eid: person.eid}}`, "takes 2 parameters"},
		{"unknown table", `GetPerson: {params: [eid], sql: "SELECT eid FROM civil.nobody WHERE eid = $1", columns: {eid: person.eid}}`, "the database refuses the query"},
		{"unknown reply field", `GetPerson: {params: [eid], sql: "SELECT eid FROM civil.person WHERE eid = $1", columns: {eid: person.nickname}}`, `has no field "nickname"`},
		{"unknown request field", `GetPerson: {params: [cin], sql: "SELECT eid FROM civil.person WHERE eid = $1", columns: {eid: person.eid}}`, `has no field "cin"`},
		{"unknown method", `GetCriminalRecord: {params: [eid], sql: "SELECT eid FROM civil.person WHERE eid = $1", columns: {eid: person.eid}}`, "has no such method"},
		{"predicate not bool", `IsAlive: {params: [eid], predicate: "marital", from: "civil.person WHERE eid = $1"}`, "int column cannot fill"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := sqlbackend.ParseConfig([]byte("member: civil-registry\nservice: jisr.civilregistry.v1.CivilRegistry\nmethods:\n  " + tc.methods + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			cfg.Database.URL = pg.URL
			_, err = sqlbackend.New(t.Context(), cfg, sqlbackend.WithLogger(slog.New(slog.DiscardHandler)))
			if !errors.Is(err, sqlbackend.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrConfig with %q", err, tc.want)
			}
		})
	}
}
