package cnss

import (
	"context"
	"database/sql"

	cnssv1 "github.com/jisr-bus/jisr/proto/gen/jisr/cnss/v1"
	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
	"github.com/jisr-bus/jisr/services/store"
)

// events is CNSS's jisr.events.v1.EventSink: a death stops the person's
// pension and closes their AMO coverage (the affiliation becomes
// inactive), so the next query about them shows it; a birth is recorded.
func (s *Server) events() store.EventSink {
	return store.EventSink{DB: s.w, Apply: map[string]store.Apply{
		"PersonDied": func(ctx context.Context, tx *sql.Tx, eid string, _ *eventsv1.Event) error {
			_, err := tx.ExecContext(ctx, `UPDATE insured SET status = ?, amo_covered = 0 WHERE eid = ?`,
				int(cnssv1.AffiliationStatus_AFFILIATION_STATUS_INACTIVE), eid)
			return err
		},
	}}
}
