package civilregistry

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
	"github.com/jisr-bus/jisr/services/demodata"
	"github.com/jisr-bus/jisr/services/store"
)

// referencePerson reads a person column by column, as GetPerson did before
// it read one packed column: the packed read must give the same reply.
func referencePerson(t *testing.T, db *sql.DB, eid string) *civilv1.GetPersonResponse {
	t.Helper()
	var p civilv1.Person
	var n civilv1.Names
	var latin, arabic jisrv1.Name
	var place jisrv1.Place
	var born, death sql.NullString
	var sex, marital int64
	var deceased bool
	err := db.QueryRow(`SELECT eid, sex, given_latin, family_latin, given_arabic, family_arabic, birth_date, commune, province,
			deceased, death_date, marital, father_name, mother_name FROM person WHERE eid = ?`, eid).Scan(&p.Eid, &sex, &latin.Given, &latin.Family, &arabic.Given, &arabic.Family,
		&born, &place.Commune, &place.Province, &deceased, &death, &marital, &p.FatherName, &p.MotherName)
	if err != nil {
		t.Fatalf("reference read: %v", err)
	}
	n.Latin, n.Arabic = &latin, &arabic
	p.Names = &n
	p.Sex = civilv1.Sex(sex)
	place.Country = "MA"
	p.Birth = &civilv1.Birth{Place: &place, Date: store.ProtoDate(born)}
	p.VitalStatus = civilv1.VitalStatus_VITAL_STATUS_ALIVE
	if deceased {
		p.VitalStatus = civilv1.VitalStatus_VITAL_STATUS_DECEASED
		p.DeathDate = store.ProtoDate(death)
	}
	p.MaritalStatus = civilv1.MaritalStatus(marital)
	return &civilv1.GetPersonResponse{Person: &p}
}

// TestPackedPersonMatchesColumns holds GetPerson's one-column packed read
// to a plain read of the same row for every citizen of a population (the
// deceased, the unmarried, NULL dates included), and after a death is
// recorded.
func TestPackedPersonMatchesColumns(t *testing.T) {
	ctx := context.Background()
	const population = 2000
	s, err := Open(ctx, filepath.Join(t.TempDir(), "civil-registry.db"), store.WithCitizens(population))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var dead, noDeathDate int
	check := func(eid string) *civilv1.GetPersonResponse {
		got, err := s.GetPerson(ctx, &civilv1.GetPersonRequest{Eid: eid})
		if err != nil {
			t.Fatalf("GetPerson: %v", err)
		}
		if want := referencePerson(t, s.db, eid); !proto.Equal(got, want) {
			t.Fatalf("packed read differs from the column read:\n got  %v\n want %v", got, want)
		}
		return got
	}
	for i := range population {
		got := check(demodata.EID(demodata.DefaultSeed, i))
		if got.GetPerson().GetVitalStatus() == civilv1.VitalStatus_VITAL_STATUS_DECEASED {
			dead++
			if got.GetPerson().GetDeathDate() == nil {
				noDeathDate++
			}
		}
	}
	if dead == 0 {
		t.Fatal("the population has no deceased citizen: the test covers too little")
	}
	// A death recorded through the admin service is read back the same way.
	eid := demodata.EID(demodata.DefaultSeed, 1)
	if _, err := s.w.ExecContext(ctx, `UPDATE person SET deceased = 1, death_date = '2026-11-01' WHERE eid = ?`, eid); err != nil {
		t.Fatal(err)
	}
	if d := check(eid).GetPerson().GetDeathDate(); d.GetYear() != 2026 || d.GetMonth() != 11 || d.GetDay() != 1 {
		t.Fatalf("death date %v after the update", d)
	}
	t.Logf("%d citizens, %d deceased (%d without a death date)", population, dead, noDeathDate)
}

// TestPackedPersonRefusesAStraySeparator: a stored field holding the
// separator would shift every field after it; the row is refused as a
// store error instead, without the eID in the message.
func TestPackedPersonRefusesAStraySeparator(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "civil-registry.db"), store.WithCitizens(4))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	eid := demodata.EID(demodata.DefaultSeed, 0)
	if _, err := s.w.ExecContext(ctx, "UPDATE person SET father_name = 'A'||char(31)||'B' WHERE eid = ?", eid); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetPerson(ctx, &civilv1.GetPersonRequest{Eid: eid})
	if status.Code(err) != codes.Internal || strings.Contains(err.Error(), eid) {
		t.Fatalf("GetPerson of a row with a stray separator: %v, want Internal without the eID", err)
	}
	var f [personFields]string
	for _, row := range []string{"", "a\x1fb", strings.Repeat("x\x1f", personFields)} {
		if split(row, &f) {
			t.Errorf("split(%q) accepted a row without exactly %d fields", row, personFields)
		}
	}
	if !split(strings.Repeat("x\x1f", personFields-1)+"x", &f) {
		t.Error("split refused a row of exactly the right fields")
	}
}
