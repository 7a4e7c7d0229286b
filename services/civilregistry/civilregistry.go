// Package civilregistry is the reference civil registry backend: the
// jisr.civilregistry.v1.CivilRegistry service over its own SQLite store.
//
// Invariant: look-ups are by primary key or index only, and no status message
// ever repeats the eID it was asked about.
package civilregistry

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"

	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
	"github.com/jisr-bus/jisr/services/demodata"
	"github.com/jisr-bus/jisr/services/store"
)

var spec = store.Spec{
	Name:    "civil-registry",
	Version: 1,
	Schema: []string{
		`CREATE TABLE person (
			eid TEXT PRIMARY KEY, sex INTEGER, given_latin TEXT, family_latin TEXT, given_arabic TEXT, family_arabic TEXT,
			birth_date TEXT, commune TEXT, province TEXT, deceased INTEGER, death_date TEXT, marital INTEGER,
			father_name TEXT, mother_name TEXT, household_id TEXT, relation INTEGER) WITHOUT ROWID`,
		`CREATE INDEX person_household ON person (household_id)`,
		`CREATE TABLE birth_act (
			eid TEXT PRIMARY KEY, act_number TEXT, registry_office TEXT, registration_year INTEGER, notes TEXT) WITHOUT ROWID`,
	},
	Inserts: map[string]string{
		"person":    `INSERT INTO person VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		"birth_act": `INSERT INTO birth_act VALUES (?,?,?,?,?)`,
	},
	Seed: func(ins map[string]*sql.Stmt, c *demodata.Citizen, _ []demodata.Citizen) error {
		if _, err := ins["person"].Exec(c.EID, c.Sex, c.GivenLatin, c.FamilyLatin, c.GivenArabic, c.FamilyArabic,
			store.Date(c.Birth), c.Commune, c.Province, c.Deceased, store.Date(c.Death), c.Marital,
			c.FatherName, c.MotherName, c.Household, c.Relation); err != nil {
			return err
		}
		var notes []string
		if c.Marital != demodata.Single {
			notes = append(notes, "Mariage inscrit en marge")
		}
		if c.Marital == demodata.Divorced {
			notes = append(notes, "Divorce inscrit en marge")
		}
		if c.Deceased {
			notes = append(notes, "Décès le "+c.Death.String())
		}
		_, err := ins["birth_act"].Exec(c.EID, c.ActNumber, c.RegistryOffice, c.RegistrationYear, strings.Join(notes, "\n"))
		return err
	},
}

// Server implements the civil registry service.
type Server struct {
	civilv1.UnimplementedCivilRegistryServer
	db                            *sql.DB
	person, act, household, alive *sql.Stmt
	w                             *sql.DB                                       // the deaths it records (admin.go)
	pub                           atomic.Pointer[eventsv1.EventPublisherClient] // its adapter, to publish them
}

// Open opens (seeding if needed) the store at path.
func Open(ctx context.Context, path string, opts ...store.Option) (*Server, error) {
	db, err := store.Open(ctx, store.Config{Path: path, Spec: spec}, opts...)
	if err != nil {
		return nil, err
	}
	s := &Server{db: db}
	if s.w, err = store.OpenWriter(ctx, path, deathTable); err != nil {
		db.Close()
		return nil, err
	}
	for q, st := range map[string]**sql.Stmt{
		personQuery: &s.person,
		`SELECT a.act_number, a.registry_office, a.registration_year, a.notes, p.given_latin, p.family_latin,
			p.given_arabic, p.family_arabic, p.birth_date, p.commune, p.province, p.father_name, p.mother_name
			FROM birth_act a JOIN person p ON p.eid = a.eid WHERE a.eid = ?`: &s.act,
		`SELECT m.eid, m.relation, m.given_latin, m.birth_date, m.deceased, m.household_id FROM person m
			WHERE m.household_id = (SELECT household_id FROM person WHERE eid = ?) ORDER BY m.relation, m.birth_date`: &s.household,
		`SELECT deceased, marital FROM person WHERE eid = ?`: &s.alive,
	} {
		if *st, err = db.PrepareContext(ctx, q); err != nil {
			db.Close()
			return nil, err
		}
	}
	return s, nil
}

// Register adds the service to a gRPC server.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	civilv1.RegisterCivilRegistryServer(r, s)
	civilv1.RegisterCivilRegistryAdminServer(r, admin{s: s})
}

// Close closes the store.
func (s *Server) Close() error { s.w.Close(); return s.db.Close() }

func checkEID(eid string) (string, error) { return store.CheckEID(eid) }

func notFound(err error) error { return store.NotFound(err, "civil registry") }

func date(s sql.NullString) *jisrv1.Date { return store.ProtoDate(s) }

// personQuery reads GetPerson's row as one text column, its fields joined
// by the unit separator (U+001F, which no stored field contains; a row
// that would split otherwise is refused as a store error). The driver
// allocates per column of a result (its name, its declared type, its value
// twice): one column instead of fourteen takes about fifty allocations off
// the bus's reference query, which stays one SQLite look-up by primary key.
// The fields are sliced out of the one string, without a copy.
const personQuery = `SELECT eid || char(31) || ifnull(sex, 0) || char(31) ||
	ifnull(given_latin, '') || char(31) || ifnull(family_latin, '') || char(31) ||
	ifnull(given_arabic, '') || char(31) || ifnull(family_arabic, '') || char(31) ||
	ifnull(birth_date, '') || char(31) || ifnull(commune, '') || char(31) || ifnull(province, '') || char(31) ||
	ifnull(deceased, 0) || char(31) || ifnull(death_date, '') || char(31) || ifnull(marital, 0) || char(31) ||
	ifnull(father_name, '') || char(31) || ifnull(mother_name, '') FROM person WHERE eid = ?`

// personFields is the number of fields personQuery joins.
const personFields = 14

// GetPerson returns a person's civil identity and status.
func (s *Server) GetPerson(ctx context.Context, req *civilv1.GetPersonRequest) (*civilv1.GetPersonResponse, error) {
	eid, err := checkEID(req.GetEid())
	if err != nil {
		return nil, err
	}
	// The reply's messages and the row in one allocation (GetPerson is the
	// bus's reference query).
	r := new(personRow)
	if err := s.person.QueryRowContext(store.Lookup(ctx), eid).Scan(&r.packed); err != nil {
		return nil, notFound(err)
	}
	var f [personFields]string
	if !split(r.packed, &f) {
		return nil, notFound(errMalformedRow)
	}
	sex, ok1 := store.Int(f[1])
	deceased, ok2 := store.Int(f[9])
	marital, ok3 := store.Int(f[11])
	if !ok1 || !ok2 || !ok3 {
		return nil, notFound(errMalformedRow)
	}
	p := &r.person
	p.Eid = f[0]
	r.latin.Given, r.latin.Family, r.arabic.Given, r.arabic.Family = f[2], f[3], f[4], f[5]
	r.names.Latin, r.names.Arabic = &r.latin, &r.arabic
	p.Names = &r.names
	p.Sex = civilv1.Sex(sex)
	r.place.Commune, r.place.Province, r.place.Country = f[7], f[8], "MA"
	r.birth.Place = &r.place
	if y, m, d := store.ParseDate(nullable(f[6])); y != 0 {
		r.date = jisrv1.Date{Year: y, Month: m, Day: d}
		r.birth.Date = &r.date
	}
	p.Birth = &r.birth
	p.VitalStatus = civilv1.VitalStatus_VITAL_STATUS_ALIVE
	if deceased != 0 {
		p.VitalStatus = civilv1.VitalStatus_VITAL_STATUS_DECEASED
		p.DeathDate = date(nullable(f[10]))
	}
	p.MaritalStatus = civilv1.MaritalStatus(marital)
	p.FatherName, p.MotherName = f[12], f[13]
	r.resp.Person = p
	return &r.resp, nil
}

// personRow holds GetPerson's reply and the row it is read from.
type personRow struct {
	resp          civilv1.GetPersonResponse
	person        civilv1.Person
	names         civilv1.Names
	latin, arabic jisrv1.Name
	birth         civilv1.Birth
	place         jisrv1.Place
	date          jisrv1.Date
	packed        string
}

// errMalformedRow is a packed row that does not split into its fields: a
// store error (Internal), never a partial reply.
var errMalformedRow = errors.New("civil registry: malformed person row")

// split cuts a packed row at its unit separators into exactly len(f) fields.
func split(row string, f *[personFields]string) bool {
	for i := range f[:len(f)-1] {
		j := strings.IndexByte(row, 0x1f)
		if j < 0 {
			return false
		}
		f[i], row = row[:j], row[j+1:]
	}
	f[len(f)-1] = row
	return strings.IndexByte(row, 0x1f) < 0
}

// nullable is a packed date field as the stored column was: "" for NULL.
func nullable(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// GetBirthAct returns the birth act.
func (s *Server) GetBirthAct(ctx context.Context, req *civilv1.GetBirthActRequest) (*civilv1.GetBirthActResponse, error) {
	eid, err := checkEID(req.GetEid())
	if err != nil {
		return nil, err
	}
	var a civilv1.BirthAct
	var notes, gl, fl, ga, fa, commune, province string
	var birth sql.NullString
	err = s.act.QueryRowContext(store.Lookup(ctx), eid).Scan(&a.ActNumber, &a.RegistryOffice, &a.RegistrationYear, &notes,
		&gl, &fl, &ga, &fa, &birth, &commune, &province, &a.FatherName, &a.MotherName)
	if err != nil {
		return nil, notFound(err)
	}
	a.ChildNames = &civilv1.Names{Latin: &jisrv1.Name{Given: gl, Family: fl}, Arabic: &jisrv1.Name{Given: ga, Family: fa}}
	a.Birth = &civilv1.Birth{Date: date(birth), Place: &jisrv1.Place{Commune: commune, Province: province, Country: "MA"}}
	if notes != "" {
		a.MarginalNotes = strings.Split(notes, "\n")
	}
	return &civilv1.GetBirthActResponse{BirthAct: &a}, nil
}

// GetHousehold returns the household the person belongs to.
func (s *Server) GetHousehold(ctx context.Context, req *civilv1.GetHouseholdRequest) (*civilv1.GetHouseholdResponse, error) {
	eid, err := checkEID(req.GetEid())
	if err != nil {
		return nil, err
	}
	rows, err := s.household.QueryContext(store.Lookup(ctx), eid)
	if err != nil {
		return nil, notFound(err)
	}
	defer rows.Close()
	h := &civilv1.Household{}
	for rows.Next() {
		var m civilv1.HouseholdMember
		var rel int32
		var birth sql.NullString
		var deceased bool
		if err := rows.Scan(&m.Eid, &rel, &m.GivenName, &birth, &deceased, &h.HouseholdId); err != nil {
			return nil, notFound(err)
		}
		m.Relation, m.BirthDate, m.Alive = civilv1.Relation(rel), date(birth), !deceased
		h.Members = append(h.Members, &m)
	}
	if err := rows.Err(); err != nil {
		return nil, notFound(err)
	}
	if len(h.Members) == 0 {
		return nil, notFound(sql.ErrNoRows)
	}
	return &civilv1.GetHouseholdResponse{Household: h}, nil
}

func (s *Server) status(ctx context.Context, raw string) (deceased bool, marital int, err error) {
	eid, err := checkEID(raw)
	if err != nil {
		return false, 0, err
	}
	if err := s.alive.QueryRowContext(store.Lookup(ctx), eid).Scan(&deceased, &marital); err != nil {
		return false, 0, notFound(err)
	}
	return deceased, marital, nil
}

// IsAlive answers whether the person is alive.
func (s *Server) IsAlive(ctx context.Context, req *civilv1.IsAliveRequest) (*civilv1.IsAliveResponse, error) {
	deceased, _, err := s.status(ctx, req.GetEid())
	if err != nil {
		return nil, err
	}
	return &civilv1.IsAliveResponse{Alive: !deceased}, nil
}

// IsMarried answers whether the person is currently married.
func (s *Server) IsMarried(ctx context.Context, req *civilv1.IsMarriedRequest) (*civilv1.IsMarriedResponse, error) {
	deceased, marital, err := s.status(ctx, req.GetEid())
	if err != nil {
		return nil, err
	}
	return &civilv1.IsMarriedResponse{Married: !deceased && marital == demodata.Married}, nil
}
