// Package cnss is the reference social security backend: the
// jisr.cnss.v1.SocialSecurity service over its own SQLite store.
//
// Invariant: look-ups are by primary key only, and no status message ever
// repeats the eID it was asked about.
package cnss

import (
	"context"
	"database/sql"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cnssv1 "github.com/jisr-bus/jisr/proto/gen/jisr/cnss/v1"
	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
	"github.com/jisr-bus/jisr/services/demodata"
	"github.com/jisr-bus/jisr/services/store"
)

const register = "social security register"

var spec = store.Spec{
	Name:    "cnss",
	Version: 1,
	Schema: []string{
		`CREATE TABLE insured (eid TEXT PRIMARY KEY, affiliation_number TEXT, status INTEGER, regime INTEGER, employer TEXT,
			affiliation_date TEXT, monthly_salary INTEGER, amo_scheme INTEGER, amo_covered INTEGER) WITHOUT ROWID`,
		// Declared employment periods; monthly declarations are derived from them.
		`CREATE TABLE period (eid TEXT, from_ym INTEGER, to_ym INTEGER, monthly_salary INTEGER, days INTEGER, PRIMARY KEY (eid, from_ym)) WITHOUT ROWID`,
		`CREATE TABLE beneficiary (insured_eid TEXT, relation TEXT, given_name TEXT)`,
		`CREATE INDEX beneficiary_insured ON beneficiary (insured_eid)`,
	},
	Inserts: map[string]string{
		"insured":     `INSERT INTO insured VALUES (?,?,?,?,?,?,?,?,?)`,
		"period":      `INSERT INTO period VALUES (?,?,?,?,?)`,
		"beneficiary": `INSERT INTO beneficiary VALUES (?,?,?)`,
	},
	Seed: seed,
}

func seed(ins map[string]*sql.Stmt, c *demodata.Citizen, block []demodata.Citizen) error {
	st, regime, number := cnssv1.AffiliationStatus_AFFILIATION_STATUS_NEVER_AFFILIATED, cnssv1.Regime_REGIME_UNSPECIFIED, ""
	switch c.Work {
	case demodata.Employee:
		st, regime = cnssv1.AffiliationStatus_AFFILIATION_STATUS_ACTIVE, cnssv1.Regime_REGIME_EMPLOYEE
	case demodata.SelfEmployed:
		st, regime = cnssv1.AffiliationStatus_AFFILIATION_STATUS_ACTIVE, cnssv1.Regime_REGIME_SELF_EMPLOYED
	case demodata.Retired:
		st, regime = cnssv1.AffiliationStatus_AFFILIATION_STATUS_RETIRED, cnssv1.Regime_REGIME_PENSIONER
	}
	if c.Deceased && c.Index%2 == 0 {
		st = cnssv1.AffiliationStatus_AFFILIATION_STATUS_INACTIVE
	}
	if st != cnssv1.AffiliationStatus_AFFILIATION_STATUS_NEVER_AFFILIATED {
		number = fmt.Sprintf("%09d", (c.Index*7919+13)%1_000_000_000)
	}
	if _, err := ins["insured"].Exec(c.EID, number, int(st), int(regime), c.Employer, store.Date(c.AffiliationDate),
		c.MonthlySalary, c.AMOScheme, c.AMOCovered); err != nil {
		return err
	}
	if c.Work == demodata.Employee || c.Work == demodata.SelfEmployed {
		from := c.AffiliationDate.Y*12 + c.AffiliationDate.M - 1
		to := demodata.Today().Y*12 + demodata.Today().M - 2 // the last complete month
		if from <= to {
			if _, err := ins["period"].Exec(c.EID, from, to, c.MonthlySalary, 26); err != nil {
				return err
			}
		}
	}
	// An insured worker's household members covered through them are their beneficiaries.
	if c.AMOCovered && !c.Beneficiary {
		for _, m := range c.Members {
			o := &block[m%4]
			if o.Index == c.Index || !o.Beneficiary || !o.AMOCovered || o.AMOScheme != c.AMOScheme {
				continue
			}
			rel := "child"
			if o.Relation != demodata.Child {
				rel = "spouse"
			}
			if _, err := ins["beneficiary"].Exec(c.EID, rel, o.GivenLatin); err != nil {
				return err
			}
		}
	}
	return nil
}

// Server implements the social security service.
type Server struct {
	cnssv1.UnimplementedSocialSecurityServer
	db                           *sql.DB
	w                            *sql.DB // the events it applies (events.go)
	insured, periods, benefitted *sql.Stmt
}

// Open opens (seeding if needed) the store at path.
func Open(ctx context.Context, path string, opts ...store.Option) (*Server, error) {
	db, err := store.Open(ctx, store.Config{Path: path, Spec: spec}, opts...)
	if err != nil {
		return nil, err
	}
	s := &Server{db: db}
	if s.w, err = store.OpenWriter(ctx, path, store.EventsTable); err != nil {
		db.Close()
		return nil, err
	}
	for q, st := range map[string]**sql.Stmt{
		`SELECT affiliation_number, status, regime, employer, affiliation_date, amo_scheme, amo_covered FROM insured WHERE eid = ?`: &s.insured,
		`SELECT from_ym, to_ym, monthly_salary, days FROM period WHERE eid = ? ORDER BY from_ym`:                                    &s.periods,
		`SELECT relation, given_name FROM beneficiary WHERE insured_eid = ?`:                                                        &s.benefitted,
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
	cnssv1.RegisterSocialSecurityServer(r, s)
	eventsv1.RegisterEventSinkServer(r, s.events())
}

// Close closes the store.
func (s *Server) Close() error { s.w.Close(); return s.db.Close() }

type insured struct {
	number, employer string
	status, regime   int32
	since            sql.NullString
	scheme           int32
	covered          bool
}

func (s *Server) lookup(ctx context.Context, raw string) (string, *insured, error) {
	eid, err := store.CheckEID(raw)
	if err != nil {
		return "", nil, err
	}
	var in insured
	if err := s.insured.QueryRowContext(store.Lookup(ctx), eid).Scan(&in.number, &in.status, &in.regime, &in.employer, &in.since, &in.scheme, &in.covered); err != nil {
		return "", nil, store.NotFound(err, register)
	}
	return eid, &in, nil
}

// GetAffiliation returns the person's affiliation.
func (s *Server) GetAffiliation(ctx context.Context, req *cnssv1.GetAffiliationRequest) (*cnssv1.GetAffiliationResponse, error) {
	_, in, err := s.lookup(ctx, req.GetEid())
	if err != nil {
		return nil, err
	}
	return &cnssv1.GetAffiliationResponse{Affiliation: &cnssv1.Affiliation{
		AffiliationNumber: in.number, Status: cnssv1.AffiliationStatus(in.status), Regime: cnssv1.Regime(in.regime),
		EmployerName: in.employer, AffiliationDate: store.ProtoDate(in.since),
	}}, nil
}

// GetContributions returns the monthly declarations between two months.
func (s *Server) GetContributions(ctx context.Context, req *cnssv1.GetContributionsRequest) (*cnssv1.GetContributionsResponse, error) {
	eid, _, err := s.lookup(ctx, req.GetEid())
	if err != nil {
		return nil, err
	}
	from, to := ym(req.GetFrom()), ym(req.GetTo())
	if from == 0 || to == 0 || to < from || to-from > 12*50 {
		return nil, status.Error(codes.InvalidArgument, "from and to must be dates, from before to, at most 50 years apart")
	}
	rows, err := s.periods.QueryContext(store.Lookup(ctx), eid)
	if err != nil {
		return nil, store.NotFound(err, register)
	}
	defer rows.Close()
	out := &cnssv1.Contributions{}
	for rows.Next() {
		var pf, pt, days int
		var salary int64
		if err := rows.Scan(&pf, &pt, &salary, &days); err != nil {
			return nil, store.NotFound(err, register)
		}
		for m := max(pf, from); m <= min(pt, to); m++ {
			out.Months = append(out.Months, &cnssv1.ContributionMonth{
				Year: int32(m / 12), Month: int32(m%12 + 1), DeclaredDays: int32(days), DeclaredSalary: store.MAD(salary),
			})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, store.NotFound(err, register)
	}
	out.TotalMonths = int32(len(out.Months))
	return &cnssv1.GetContributionsResponse{Contributions: out}, nil
}

func ym(d *jisrv1.Date) int {
	if d.GetYear() < 1900 || d.GetMonth() < 1 || d.GetMonth() > 12 {
		return 0
	}
	return int(d.GetYear())*12 + int(d.GetMonth()) - 1
}

// GetAmoCoverage returns the person's AMO health-insurance coverage.
func (s *Server) GetAmoCoverage(ctx context.Context, req *cnssv1.GetAmoCoverageRequest) (*cnssv1.GetAmoCoverageResponse, error) {
	eid, in, err := s.lookup(ctx, req.GetEid())
	if err != nil {
		return nil, err
	}
	cov := &cnssv1.AmoCoverage{Covered: in.covered, Scheme: cnssv1.AmoScheme(in.scheme)}
	if in.covered {
		t := demodata.Today()
		cov.ValidUntil = &jisrv1.Date{Year: int32(t.Y) + 1, Month: 12, Day: 31}
		rows, err := s.benefitted.QueryContext(store.Lookup(ctx), eid)
		if err != nil {
			return nil, store.NotFound(err, register)
		}
		defer rows.Close()
		for rows.Next() {
			var b cnssv1.Beneficiary
			if err := rows.Scan(&b.Relation, &b.GivenName); err != nil {
				return nil, store.NotFound(err, register)
			}
			cov.Beneficiaries = append(cov.Beneficiaries, &b)
		}
	}
	return &cnssv1.GetAmoCoverageResponse{Coverage: cov}, nil
}

// IsInsured answers whether the person is covered by AMO today.
func (s *Server) IsInsured(ctx context.Context, req *cnssv1.IsInsuredRequest) (*cnssv1.IsInsuredResponse, error) {
	_, in, err := s.lookup(ctx, req.GetEid())
	if err != nil {
		return nil, err
	}
	return &cnssv1.IsInsuredResponse{Insured: in.covered}, nil
}
