//go:build postgres

package main

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/cmd/internal/dev"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	"github.com/jisr-bus/jisr/services/backend/sql/pgtest"
	"github.com/jisr-bus/jisr/services/demodata"
)

// `jisr dev --postgres URL`: the civil registry is loaded into PostgreSQL
// and answered from there by the SQL backend, through the real provider
// adapter, gateway and CNSS's adapter — with the rule's minimisation.
func TestDevPostgresAnswersTheCivilRegistryFromPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	f := startDevWithOptions(t, nil, func(o *dev.Options) { o.Postgres = pg.URL })
	tok := f.getPersonToken(t)
	cc := f.dial(t, "cnss")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	withMD := func(kv ...string) context.Context { return metadata.NewOutgoingContext(ctx, metadata.Pairs(kv...)) }
	client := civilv1.NewCivilRegistryClient(cc)

	resp, err := client.GetPerson(withMD("jisr-purpose", tok.Purpose, "jisr-consent", tok.Token), &civilv1.GetPersonRequest{Eid: tok.Citizen})
	if err != nil {
		t.Fatalf("GetPerson through the gateway from PostgreSQL: %v\n%s", err, f.logs.String())
	}
	i, ok := demodata.Index(demodata.DefaultSeed, tok.Citizen)
	if !ok {
		t.Fatalf("%s is no demo citizen", tok.Citizen)
	}
	c := demodata.Get(demodata.DefaultSeed, i)
	p := resp.GetPerson()
	if p.GetEid() != c.EID || p.GetNames().GetLatin().GetFamily() != c.FamilyLatin || p.GetBirth().GetDate().GetYear() != int32(c.Birth.Y) {
		t.Fatalf("person %v, want %s %s born %d", p, c.EID, c.FamilyLatin, c.Birth.Y)
	}
	if p.GetFatherName() != "" || p.GetMotherName() != "" {
		t.Fatalf("fields outside the rule were released: %v", p)
	}
	alive, err := client.IsAlive(withMD("jisr-purpose", "pension-continuity"), &civilv1.IsAliveRequest{Eid: tok.Citizen})
	if err != nil || alive.GetAlive() == c.Deceased {
		t.Fatalf("IsAlive (a SQL predicate) under a mandate: %v %v", alive, err)
	}

	// The answers came from PostgreSQL: without it, the same query fails.
	pg.Stop()
	_, err = client.IsAlive(withMD("jisr-purpose", "pension-continuity"), &civilv1.IsAliveRequest{Eid: tok.Citizen})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("with PostgreSQL stopped: %v", err)
	}
}
