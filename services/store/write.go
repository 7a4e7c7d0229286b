package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
)

// OpenWriter opens the store at path (opened by Open, so seeded) for the
// backend's own writes — the events it applied, the acts it recorded — and
// creates the tables of schema when missing. One connection in WAL mode:
// each commit is seen by the next query of the read side.
func OpenWriter(ctx context.Context, path string, schema ...string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(FULL)")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	for _, s := range schema {
		if _, err := db.ExecContext(ctx, s); err != nil {
			db.Close()
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	return db, nil
}

// EventsTable records the ids of the events a backend applied, so that an
// event delivered again (after a crash before its acknowledgement) is not
// applied twice: insert the id in the transaction that applies the event.
const EventsTable = `CREATE TABLE IF NOT EXISTS event_applied (id TEXT PRIMARY KEY, type TEXT, applied_at TEXT) WITHOUT ROWID`

// Apply changes a backend's data for one event, inside the transaction that
// records the event's id.
type Apply func(ctx context.Context, tx *sql.Tx, eid string, ev *eventsv1.Event) error

// EventSink is a reference backend's jisr.events.v1.EventSink: it records
// every event it receives once (EventsTable) and runs the Apply of its type,
// in the same transaction; an event it applied before is answered OK and
// not applied again (the adapter delivers the last event again after a
// crash). DB comes from OpenWriter with EventsTable.
type EventSink struct {
	eventsv1.UnimplementedEventSinkServer
	DB    *sql.DB
	Apply map[string]Apply // by event type name (PersonDied)
}

// Deliver applies one event.
func (s EventSink) Deliver(ctx context.Context, req *eventsv1.DeliverRequest) (*eventsv1.DeliverResponse, error) {
	ev := req.GetEvent()
	if ev.GetId() == "" || req.GetPublisher() == "" {
		return nil, status.Error(codes.InvalidArgument, "an event with an id and a publisher is required")
	}
	eid, err := CheckEID(ev.GetEid())
	if err != nil {
		return nil, err
	}
	typ := ""
	if fd := ev.ProtoReflect().WhichOneof(ev.ProtoReflect().Descriptor().Oneofs().ByName("payload")); fd != nil {
		typ = string(fd.Message().Name())
	}
	busy := status.Error(codes.Unavailable, "the register is busy")
	tx, err := s.DB.BeginTx(ctx, nil)
	if err != nil {
		return nil, busy
	}
	defer func() { _ = tx.Rollback() }()
	res, err := tx.ExecContext(ctx, `INSERT INTO event_applied VALUES (?,?,?) ON CONFLICT DO NOTHING`,
		req.GetPublisher()+"/"+ev.GetId(), typ, time.Now().UTC().Format(time.RFC3339Nano))
	if err != nil {
		return nil, busy
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return &eventsv1.DeliverResponse{}, nil // applied before
	}
	if apply := s.Apply[typ]; apply != nil {
		if err := apply(ctx, tx, eid, ev); err != nil {
			return nil, busy
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, busy
	}
	return &eventsv1.DeliverResponse{}, nil
}
