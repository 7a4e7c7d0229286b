package accesslog

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/index"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/audit/tree"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

// Page sizes.
const (
	DefaultPageSize = 50
	MaxPageSize     = 500
)

// ErrConfig: a required part is missing.
var ErrConfig = errors.New("accesslog: invalid configuration")

// Config is what the service needs.
type Config struct {
	Federation *federation.Federation // member titles
	Records    jetstream.Stream       // the audit stream
	Index      *index.Index           // proofs
	Keys       *checkpoint.Keys       // the logs' public keys, served to citizens
	Auth       Authenticator
	Log        *slog.Logger
	Now        func() time.Time // default time.Now
}

// Service serves the access log.
type Service struct {
	auditv1.UnimplementedAccessLogServer
	cfg Config
	log *slog.Logger
}

// New validates cfg and returns the service.
func New(cfg Config) (*Service, error) {
	switch {
	case cfg.Federation == nil:
		return nil, fmt.Errorf("%w: Federation is required", ErrConfig)
	case cfg.Records == nil:
		return nil, fmt.Errorf("%w: Records is required", ErrConfig)
	case cfg.Index == nil:
		return nil, fmt.Errorf("%w: Index is required", ErrConfig)
	case cfg.Keys == nil:
		return nil, fmt.Errorf("%w: Keys is required", ErrConfig)
	case cfg.Auth == nil:
		return nil, fmt.Errorf("%w: Auth is required", ErrConfig)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg, log: cfg.Log.With("component", "access-log")}, nil
}

// ListAccesses is the gRPC method: the citizen comes from the
// "authorization: Bearer <token>" metadata.
func (s *Service) ListAccesses(ctx context.Context, req *auditv1.ListAccessesRequest) (*auditv1.ListAccessesResponse, error) {
	ckey, err := s.authenticate(ctx, bearerFromMetadata(ctx))
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, "sign in with the national e-ID to read your access log")
	}
	resp, err := s.List(ctx, ckey, req)
	if err != nil {
		return nil, toStatus(err)
	}
	return resp, nil
}

// GetLogKeys returns the public keys of the logs.
func (s *Service) GetLogKeys(context.Context, *auditv1.GetLogKeysRequest) (*auditv1.GetLogKeysResponse, error) {
	return &auditv1.GetLogKeysResponse{Keys: s.cfg.Keys.VerifierKeys()}, nil
}

// Register registers the gRPC service on a server.
func (s *Service) Register(g *grpc.Server) { auditv1.RegisterAccessLogServer(g, s) }

func (s *Service) authenticate(ctx context.Context, credential string) (string, error) {
	if credential == "" {
		return "", ErrUnauthenticated
	}
	return s.cfg.Auth.Authenticate(ctx, credential)
}

func bearerFromMetadata(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
	}
	return ""
}

// ErrBadRequest: a page token or size that does not hold.
var ErrBadRequest = errors.New("accesslog: bad request")

// ErrUnavailable: the audit stream cannot be read now.
var ErrUnavailable = errors.New("accesslog: the audit log cannot be read now")

func toStatus(err error) error {
	switch {
	case errors.Is(err, ErrBadRequest):
		return status.Error(codes.InvalidArgument, "invalid page_token or page_size")
	default:
		return status.Error(codes.Unavailable, "the access log cannot be read now; retry later")
	}
}

type entry struct {
	rec  *auditv1.Record
	data []byte
	key  cursor
}

// cursor orders accesses newest first: time descending, then log and leaf.
type cursor struct {
	nanos int64
	log   string
	leaf  uint64
}

func (c cursor) compare(d cursor) int {
	if r := cmp.Compare(d.nanos, c.nanos); r != 0 {
		return r
	}
	if r := cmp.Compare(c.log, d.log); r != 0 {
		return r
	}
	return cmp.Compare(d.leaf, c.leaf)
}

func (c cursor) token() string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%d|%s|%d", c.nanos, c.log, c.leaf))
}

func parseCursor(tok string) (cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return cursor{}, ErrBadRequest
	}
	parts := strings.Split(string(b), "|")
	if len(parts) != 3 {
		return cursor{}, ErrBadRequest
	}
	n, err1 := strconv.ParseInt(parts[0], 10, 64)
	l, err2 := strconv.ParseUint(parts[2], 10, 64)
	if err1 != nil || err2 != nil {
		return cursor{}, ErrBadRequest
	}
	return cursor{nanos: n, log: parts[1], leaf: l}, nil
}

// List returns one page of the accesses to the data of the citizen ckey.
func (s *Service) List(ctx context.Context, ckey string, req *auditv1.ListAccessesRequest) (*auditv1.ListAccessesResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size < 0 || size > MaxPageSize:
		return nil, ErrBadRequest
	case size == 0:
		size = DefaultPageSize
	}
	var after *cursor
	if tok := req.GetPageToken(); tok != "" {
		c, err := parseCursor(tok)
		if err != nil {
			return nil, err
		}
		after = &c
	}
	if _, err := record.CitizenFilter(ckey); err != nil {
		return nil, ErrBadRequest
	}
	now := s.cfg.Now()
	// The index says where this citizen's records are (which message, which
	// log and leaf); the records themselves are read from the stream.
	where, err := s.cfg.Index.Citizen(ctx, ckey)
	if err != nil {
		s.log.Warn("reading the audit index for the access log", "err", err)
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	var entries []entry
	msgs := map[uint64][][]byte{}
	for _, w := range where {
		recs, ok := msgs[w.Seq]
		if !ok {
			m, err := s.cfg.Records.GetMsg(ctx, w.Seq)
			if err != nil {
				s.log.Warn("reading the audit stream for the access log", "seq", w.Seq, "err", err)
				return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
			}
			if _, _, _, recs, err = record.Stored(m.Subject, m.Header, m.Data); err != nil {
				s.log.Error("an indexed audit message is unreadable: run `jisr audit verify`", "seq", w.Seq, "err", err)
			}
			msgs[w.Seq] = recs
		}
		var rec *auditv1.Record
		var data []byte
		for _, d := range recs {
			if r, err := record.Parse(d); err == nil && r.GetLogId() == w.Log && r.GetLeafIndex() == w.Leaf {
				rec, data = r, d
				break
			}
		}
		if rec == nil || rec.GetCkey() != ckey {
			s.log.Error("a record about this citizen is unreadable or misfiled: run `jisr audit verify`", "seq", w.Seq, "log", w.Log, "leaf", w.Leaf)
			continue
		}
		if rec.GetVisibleAt().AsTime().After(now) {
			continue // a mandate whose law lets the access be disclosed later
		}
		if rec.GetDecision() != auditv1.Decision_DECISION_ALLOWED && !req.GetIncludeRefused() {
			continue
		}
		entries = append(entries, entry{rec: rec, data: data, key: cursor{nanos: rec.GetTime().AsTime().UnixNano(), log: rec.GetLogId(), leaf: rec.GetLeafIndex()}})
	}
	slices.SortFunc(entries, func(a, b entry) int { return a.key.compare(b.key) })
	start := 0
	if after != nil {
		start, _ = slices.BinarySearchFunc(entries, *after, func(e entry, c cursor) int { return e.key.compare(c) })
		for start < len(entries) && entries[start].key.compare(*after) <= 0 {
			start++
		}
	}
	end := min(start+size, len(entries))
	resp := &auditv1.ListAccessesResponse{}
	for _, e := range entries[start:end] {
		resp.Accesses = append(resp.Accesses, s.access(ctx, e))
	}
	if end < len(entries) {
		resp.NextPageToken = entries[end-1].key.token()
	}
	return resp, nil
}

func (s *Service) access(ctx context.Context, e entry) *auditv1.Access {
	r := e.rec
	a := &auditv1.Access{
		Time:       r.GetTime(),
		Consumer:   s.party(r.GetConsumer()),
		Provider:   s.party(r.GetProvider()),
		Service:    r.GetService(),
		Method:     r.GetMethod(),
		Fields:     r.GetFields(),
		Purpose:    r.GetPurpose(),
		LegalBasis: r.GetLegalBasis(),
		Law:        r.GetLaw(),
		Decision:   r.GetDecision(),
		Reason:     r.GetReason(),
		Record:     e.data,
	}
	p, err := s.cfg.Index.Proof(ctx, r.GetLogId(), r.GetLeafIndex(), tree.LeafHash(e.data))
	switch {
	case err == nil:
		a.Proof = p
	case errors.Is(err, index.ErrNotIndexed):
		// Not covered by a checkpoint yet: the next one follows within seconds.
	default:
		s.log.Error("no inclusion proof for a record", "log", r.GetLogId(), "leaf", r.GetLeafIndex(), "err", err)
	}
	return a
}

func (s *Service) party(name string) *auditv1.Party {
	if name == "" {
		return nil
	}
	p := &auditv1.Party{Name: name}
	if m, err := s.cfg.Federation.Member(name); err == nil {
		p.Title = m.Title
	}
	return p
}
