package civilregistry

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

// deathTable keeps each recorded death's event id, so recording it again
// publishes the same event (which no member receives twice).
const deathTable = `CREATE TABLE IF NOT EXISTS death_event (eid TEXT PRIMARY KEY, event_id TEXT, act_number TEXT) WITHOUT ROWID`

// admin is the registrar's side (jisr.civilregistry.v1.CivilRegistryAdmin).
type admin struct {
	civilv1.UnimplementedCivilRegistryAdminServer
	s *Server
}

// SetEventPublisher names the adapter's EventPublisher through which the
// registry publishes the deaths it records.
func (s *Server) SetEventPublisher(p eventsv1.EventPublisherClient) { s.pub.Store(&p) }

// RecordDeath records the death in the register, then publishes PersonDied.
func (a admin) RecordDeath(ctx context.Context, req *civilv1.RecordDeathRequest) (*civilv1.RecordDeathResponse, error) {
	s := a.s
	eid, err := checkEID(req.GetEid())
	if err != nil {
		return nil, err
	}
	p := s.pub.Load()
	if p == nil {
		return nil, status.Error(codes.FailedPrecondition, "the registry has no adapter to publish the death through")
	}
	day := req.GetDateOfDeath()
	if day == nil {
		t := time.Now().UTC()
		day = &jisrv1.Date{Year: int32(t.Year()), Month: int32(t.Month()), Day: int32(t.Day())}
	}
	id, act, err := s.recordDeath(ctx, eid, day)
	if err != nil {
		return nil, err
	}
	out, err := (*p).Publish(ctx, &eventsv1.PublishRequest{Event: &eventsv1.Event{
		Id: id, Time: timestamppb.Now(), Eid: eid,
		Payload: &eventsv1.Event_PersonDied{PersonDied: &eventsv1.PersonDied{DateOfDeath: day, PlaceOfDeath: req.GetPlaceOfDeath(), ActNumber: act}},
	}})
	if err != nil {
		// Recorded but not yet published: recording it again publishes it.
		return nil, err
	}
	return &civilv1.RecordDeathResponse{EventId: id, Deliveries: out.GetDeliveries()}, nil
}

func (s *Server) recordDeath(ctx context.Context, eid string, day *jisrv1.Date) (id, act string, err error) {
	busy := status.Error(codes.Unavailable, "the register is busy")
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return "", "", busy
	}
	defer func() { _ = tx.Rollback() }()
	err = tx.QueryRowContext(ctx, `SELECT event_id, act_number FROM death_event WHERE eid = ?`, eid).Scan(&id, &act)
	switch {
	case err == nil:
		return id, act, nil
	case !errors.Is(err, sql.ErrNoRows):
		return "", "", busy
	}
	res, err := tx.ExecContext(ctx, `UPDATE person SET deceased = 1, death_date = ? WHERE eid = ?`,
		fmt.Sprintf("%04d-%02d-%02d", day.GetYear(), day.GetMonth(), day.GetDay()), eid)
	if err != nil {
		return "", "", busy
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return "", "", status.Error(codes.NotFound, "no such person in the civil registry")
	}
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	id, act = "death-"+hex.EncodeToString(b), fmt.Sprintf("D-%d-%s", day.GetYear(), hex.EncodeToString(b[:3]))
	if _, err := tx.ExecContext(ctx, `INSERT INTO death_event VALUES (?,?,?)`, eid, id, act); err != nil {
		return "", "", busy
	}
	if err := tx.Commit(); err != nil {
		return "", "", busy
	}
	return id, act, nil
}
