package store

import (
	"context"
	"database/sql"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
	"github.com/jisr-bus/jisr/services/demodata"
)

// Lookup is the context of a look-up by primary key: the call's, without
// its cancellation. With a cancellable context database/sql and the SQLite
// driver each start a goroutine per query to watch it; a primary-key
// look-up takes microseconds (readers never wait in WAL mode), so watching
// would cost more than it could save.
func Lookup(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

// CheckEID normalises a request's eID; the error carries no eID.
func CheckEID(eid string) (string, error) {
	eid = demodata.NormaliseEID(eid)
	if eid == "" || len(eid) > 32 {
		return "", status.Error(codes.InvalidArgument, "eid is required")
	}
	return eid, nil
}

// NotFound maps a look-up error to a status naming the register, not the eID.
func NotFound(err error, register string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return status.Error(codes.NotFound, "no person with this eID in the "+register)
	}
	return status.Error(codes.Internal, register+" store error")
}

// ProtoDate reads a stored date as a jisr.v1.Date (nil when NULL).
func ProtoDate(s sql.NullString) *jisrv1.Date {
	y, m, d := ParseDate(s)
	if y == 0 {
		return nil
	}
	return &jisrv1.Date{Year: y, Month: m, Day: d}
}

// MAD is an amount in centimes of Moroccan dirham.
func MAD(minor int64) *jisrv1.Money { return &jisrv1.Money{Currency: "MAD", MinorUnits: minor} }
