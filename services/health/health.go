// Package health is the reference ministry of health backend: the
// jisr.health.v1.Health service over its own SQLite store.
//
// Invariant: look-ups are by primary key only, and no status message ever
// repeats the eID it was asked about.
package health

import (
	"context"
	"database/sql"

	"google.golang.org/grpc"

	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
	healthv1 "github.com/jisr-bus/jisr/proto/gen/jisr/health/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
	"github.com/jisr-bus/jisr/services/demodata"
	"github.com/jisr-bus/jisr/services/store"
)

const register = "health register"

var spec = store.Spec{
	Name:    "health",
	Version: 1,
	Schema: []string{
		`CREATE TABLE entitlement (eid TEXT PRIMARY KEY, insurer INTEGER, plan TEXT) WITHOUT ROWID`,
		`CREATE TABLE disability (eid TEXT PRIMARY KEY, degree INTEGER, category INTEGER, assessed_on TEXT, card_number TEXT) WITHOUT ROWID`,
	},
	Inserts: map[string]string{
		"entitlement": `INSERT INTO entitlement VALUES (?,?,?)`,
		"disability":  `INSERT INTO disability VALUES (?,?,?,?,?)`,
	},
	Seed: func(ins map[string]*sql.Stmt, c *demodata.Citizen, _ []demodata.Citizen) error {
		insurer, plan := healthv1.Insurer_INSURER_NONE, ""
		switch {
		case c.Deceased:
		case c.CNOPS:
			insurer, plan = healthv1.Insurer_INSURER_CNOPS, "AMO secteur public"
		case c.AMOCovered && c.AMOScheme == demodata.AMOTadamon:
			insurer, plan = healthv1.Insurer_INSURER_AMO_TADAMON, "AMO Tadamon"
		case c.AMOCovered && c.AMOScheme == demodata.AMOSelfEmployed:
			insurer, plan = healthv1.Insurer_INSURER_CNSS, "AMO travailleurs non salariés"
		case c.AMOCovered:
			insurer, plan = healthv1.Insurer_INSURER_CNSS, "AMO salariés"
		}
		if _, err := ins["entitlement"].Exec(c.EID, int(insurer), plan); err != nil {
			return err
		}
		if c.Disability {
			_, err := ins["disability"].Exec(c.EID, c.DisabilityDegree, c.DisabilityKind, store.Date(c.Assessed), c.DisabilityCard)
			return err
		}
		return nil
	},
}

// Server implements the health service.
type Server struct {
	healthv1.UnimplementedHealthServer
	db                       *sql.DB
	w                        *sql.DB // the events it receives
	entitlement, disabilityQ *sql.Stmt
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
	if s.entitlement, err = db.PrepareContext(ctx, `SELECT insurer, plan FROM entitlement WHERE eid = ?`); err == nil {
		s.disabilityQ, err = db.PrepareContext(ctx, `SELECT degree, category, assessed_on, card_number FROM disability WHERE eid = ?`)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Register adds the service to a gRPC server.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	healthv1.RegisterHealthServer(r, s)
	eventsv1.RegisterEventSinkServer(r, store.EventSink{DB: s.w})
}

// Close closes the store.
func (s *Server) Close() error { s.w.Close(); return s.db.Close() }

// GetInsuranceEntitlement returns who covers the person's care.
func (s *Server) GetInsuranceEntitlement(ctx context.Context, req *healthv1.GetInsuranceEntitlementRequest) (*healthv1.GetInsuranceEntitlementResponse, error) {
	eid, err := store.CheckEID(req.GetEid())
	if err != nil {
		return nil, err
	}
	var insurer int32
	var plan string
	if err := s.entitlement.QueryRowContext(store.Lookup(ctx), eid).Scan(&insurer, &plan); err != nil {
		return nil, store.NotFound(err, register)
	}
	e := &healthv1.Entitlement{Insurer: healthv1.Insurer(insurer), Plan: plan}
	if e.Insurer != healthv1.Insurer_INSURER_NONE {
		e.Entitled = true
		e.ValidUntil = &jisrv1.Date{Year: int32(demodata.Today().Y) + 1, Month: 12, Day: 31}
	}
	return &healthv1.GetInsuranceEntitlementResponse{Entitlement: e}, nil
}

func (s *Server) disability(ctx context.Context, raw string) (*healthv1.DisabilityStatus, error) {
	eid, err := store.CheckEID(raw)
	if err != nil {
		return nil, err
	}
	var insurer int32
	var plan string
	if err := s.entitlement.QueryRowContext(store.Lookup(ctx), eid).Scan(&insurer, &plan); err != nil {
		return nil, store.NotFound(err, register) // not a known person at all
	}
	d := &healthv1.DisabilityStatus{}
	var assessed sql.NullString
	var degree, category int32
	err = s.disabilityQ.QueryRowContext(store.Lookup(ctx), eid).Scan(&degree, &category, &assessed, &d.CardNumber)
	switch {
	case err == sql.ErrNoRows:
		return d, nil
	case err != nil:
		return nil, store.NotFound(err, register)
	}
	d.HasDisability, d.DegreePercent, d.Category = true, degree, healthv1.DisabilityCategory(category)
	d.AssessedOn = store.ProtoDate(assessed)
	return d, nil
}

// GetDisabilityStatus returns the person's recognised disability, if any.
func (s *Server) GetDisabilityStatus(ctx context.Context, req *healthv1.GetDisabilityStatusRequest) (*healthv1.GetDisabilityStatusResponse, error) {
	d, err := s.disability(ctx, req.GetEid())
	if err != nil {
		return nil, err
	}
	return &healthv1.GetDisabilityStatusResponse{Status: d}, nil
}

// HasDisability answers whether the person has a recognised disability.
func (s *Server) HasDisability(ctx context.Context, req *healthv1.HasDisabilityRequest) (*healthv1.HasDisabilityResponse, error) {
	d, err := s.disability(ctx, req.GetEid())
	if err != nil {
		return nil, err
	}
	return &healthv1.HasDisabilityResponse{HasDisability: d.GetHasDisability()}, nil
}
