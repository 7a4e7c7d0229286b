// Package tax is the reference tax administration backend: the
// jisr.tax.v1.Tax service over its own SQLite store.
//
// Invariant: look-ups are by primary key only, and no status message ever
// repeats the eID it was asked about.
package tax

import (
	"context"
	"database/sql"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
	taxv1 "github.com/jisr-bus/jisr/proto/gen/jisr/tax/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
	"github.com/jisr-bus/jisr/services/demodata"
	"github.com/jisr-bus/jisr/services/store"
)

const register = "tax register"

var spec = store.Spec{
	Name:    "tax",
	Version: 1,
	Schema: []string{
		`CREATE TABLE taxpayer (eid TEXT PRIMARY KEY, good_standing INTEGER, outstanding INTEGER) WITHOUT ROWID`,
		`CREATE TABLE declaration (eid TEXT, year INTEGER, salary INTEGER, professional INTEGER, agricultural INTEGER,
			rental INTEGER, capital INTEGER, tax_due INTEGER, tax_paid INTEGER, filed TEXT, PRIMARY KEY (eid, year)) WITHOUT ROWID`,
	},
	Inserts: map[string]string{
		"taxpayer":    `INSERT INTO taxpayer VALUES (?,?,?)`,
		"declaration": `INSERT INTO declaration VALUES (?,?,?,?,?,?,?,?,?,?)`,
	},
	Seed: func(ins map[string]*sql.Stmt, c *demodata.Citizen, _ []demodata.Citizen) error {
		if _, err := ins["taxpayer"].Exec(c.EID, c.GoodStanding, c.Outstanding); err != nil {
			return err
		}
		for y, in := range c.Incomes {
			if !in.Declared {
				continue
			}
			if _, err := ins["declaration"].Exec(c.EID, demodata.FirstYear+y, in.Salary, in.Professional, in.Agricultural,
				in.Rental, in.Capital, in.TaxDue, in.TaxPaid, store.Date(in.Filed)); err != nil {
				return err
			}
		}
		return nil
	},
}

// Server implements the tax service.
type Server struct {
	taxv1.UnimplementedTaxServer
	db                 *sql.DB
	w                  *sql.DB // the events it receives
	taxpayer, declared *sql.Stmt
}

// Open opens (seeding if needed) the store at path.
func Open(ctx context.Context, path string, opts ...store.Option) (*Server, error) {
	db, err := store.Open(ctx, store.Config{Path: path, Spec: spec}, opts...)
	if err != nil {
		return nil, err
	}
	s := &Server{db: db}
	// The events it receives are recorded once each (no data of its changes).
	if s.w, err = store.OpenWriter(ctx, path, store.EventsTable); err != nil {
		db.Close()
		return nil, err
	}
	if s.taxpayer, err = db.PrepareContext(ctx, `SELECT good_standing, outstanding FROM taxpayer WHERE eid = ?`); err == nil {
		s.declared, err = db.PrepareContext(ctx, `SELECT salary, professional, agricultural, rental, capital, tax_due, tax_paid, filed
			FROM declaration WHERE eid = ? AND year = ?`)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Register adds the service to a gRPC server.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	taxv1.RegisterTaxServer(r, s)
	eventsv1.RegisterEventSinkServer(r, store.EventSink{DB: s.w})
}

// Close closes the store.
func (s *Server) Close() error { s.w.Close(); return s.db.Close() }

func checkYear(y int32) error {
	if y < demodata.FirstYear || y > demodata.LastYear {
		return status.Errorf(codes.InvalidArgument, "year must be between %d and %d", demodata.FirstYear, demodata.LastYear)
	}
	return nil
}

// summary reads a year's declaration; an undeclared year is a zero summary.
func (s *Server) summary(ctx context.Context, eid string, year int32) (*taxv1.IncomeSummary, error) {
	var good bool
	var outstanding int64
	if err := s.taxpayer.QueryRowContext(store.Lookup(ctx), eid).Scan(&good, &outstanding); err != nil {
		return nil, store.NotFound(err, register)
	}
	sum := &taxv1.IncomeSummary{Year: year, Categories: &taxv1.IncomeCategories{}, TotalIncome: store.MAD(0), TaxDue: store.MAD(0), TaxPaid: store.MAD(0)}
	var sal, prof, agri, rent, capi, due, paid int64
	var filed sql.NullString
	err := s.declared.QueryRowContext(store.Lookup(ctx), eid, year).Scan(&sal, &prof, &agri, &rent, &capi, &due, &paid, &filed)
	if err == sql.ErrNoRows {
		return sum, nil
	}
	if err != nil {
		return nil, store.NotFound(err, register)
	}
	sum.Declared = true
	sum.Categories = &taxv1.IncomeCategories{Salary: store.MAD(sal), Professional: store.MAD(prof), Agricultural: store.MAD(agri), Rental: store.MAD(rent), Capital: store.MAD(capi)}
	sum.TotalIncome, sum.TaxDue, sum.TaxPaid = store.MAD(sal+prof+agri+rent+capi), store.MAD(due), store.MAD(paid)
	sum.FilingDate = store.ProtoDate(filed)
	return sum, nil
}

// GetIncomeSummary returns a year's declared income.
func (s *Server) GetIncomeSummary(ctx context.Context, req *taxv1.GetIncomeSummaryRequest) (*taxv1.GetIncomeSummaryResponse, error) {
	eid, err := store.CheckEID(req.GetEid())
	if err != nil {
		return nil, err
	}
	if err := checkYear(req.GetYear()); err != nil {
		return nil, err
	}
	sum, err := s.summary(ctx, eid, req.GetYear())
	if err != nil {
		return nil, err
	}
	return &taxv1.GetIncomeSummaryResponse{Summary: sum}, nil
}

// GetTaxClearance returns the tax clearance certificate.
func (s *Server) GetTaxClearance(ctx context.Context, req *taxv1.GetTaxClearanceRequest) (*taxv1.GetTaxClearanceResponse, error) {
	eid, err := store.CheckEID(req.GetEid())
	if err != nil {
		return nil, err
	}
	var good bool
	var outstanding int64
	if err := s.taxpayer.QueryRowContext(store.Lookup(ctx), eid).Scan(&good, &outstanding); err != nil {
		return nil, store.NotFound(err, register)
	}
	c := &taxv1.TaxClearance{
		Status:            taxv1.ClearanceStatus_CLEARANCE_STATUS_NOT_IN_GOOD_STANDING,
		OutstandingAmount: store.MAD(outstanding),
	}
	if good {
		today := demodata.Today()
		c.Status = taxv1.ClearanceStatus_CLEARANCE_STATUS_IN_GOOD_STANDING
		c.CertificateNumber = fmt.Sprintf("ARF-%d-%s", today.Y, eid[len(eid)-4:])
		c.Issued = &jisrv1.Date{Year: int32(today.Y), Month: int32(today.M), Day: int32(today.D)}
		c.ValidUntil = &jisrv1.Date{Year: int32(today.Y) + 1, Month: int32(today.M), Day: int32(today.D)}
	}
	return &taxv1.GetTaxClearanceResponse{Clearance: c}, nil
}

// IsIncomeBelow answers whether the year's declared income is below a threshold.
func (s *Server) IsIncomeBelow(ctx context.Context, req *taxv1.IsIncomeBelowRequest) (*taxv1.IsIncomeBelowResponse, error) {
	eid, err := store.CheckEID(req.GetEid())
	if err != nil {
		return nil, err
	}
	if err := checkYear(req.GetYear()); err != nil {
		return nil, err
	}
	if req.GetThresholdMinorUnits() <= 0 {
		return nil, status.Error(codes.InvalidArgument, "threshold_minor_units must be positive")
	}
	sum, err := s.summary(ctx, eid, req.GetYear())
	if err != nil {
		return nil, err
	}
	return &taxv1.IsIncomeBelowResponse{Below: sum.GetTotalIncome().GetMinorUnits() < req.GetThresholdMinorUnits()}, nil
}
