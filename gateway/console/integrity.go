package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/gateway/audit/auditor"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/audit/verify"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

// LogState is one gateway log at a glance.
type LogState struct {
	ID             string
	Records        uint64 // records the console has seen
	LastRecord     time.Time
	CheckpointSize uint64 // the latest signed checkpoint
	CheckpointAt   time.Time
	CheckpointErr  string // why the latest checkpoint does not verify
}

// Logs returns every log's size and latest checkpoint.
func (s *Server) Logs(ctx context.Context) ([]LogState, error) {
	rows, err := s.cfg.Store.db.QueryContext(ctx, `SELECT log, COUNT(*), MAX(time_ns) FROM decisions GROUP BY log ORDER BY log`)
	if err != nil {
		return nil, err
	}
	var out []LogState
	for rows.Next() {
		var l LogState
		var last int64
		if err := rows.Scan(&l.ID, &l.Records, &last); err != nil {
			rows.Close()
			return nil, err
		}
		l.LastRecord = time.Unix(0, last).UTC()
		out = append(out, l)
	}
	rows.Close()
	for i := range out {
		s.latestCheckpoint(ctx, &out[i])
	}
	return out, nil
}

func (s *Server) latestCheckpoint(ctx context.Context, l *LogState) {
	subj, err := record.CheckpointSubject(l.ID)
	if err != nil {
		l.CheckpointErr = err.Error()
		return
	}
	m, err := s.cfg.Checkpoints.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		l.CheckpointErr = "no checkpoint yet"
		return
	}
	if err != nil {
		l.CheckpointErr = err.Error()
		return
	}
	st := &auditv1.CheckpointState{}
	if err := proto.Unmarshal(m.Data, st); err != nil {
		l.CheckpointErr = "not a checkpoint"
		return
	}
	c, err := checkpoint.Open(st.GetCheckpoint(), s.cfg.Keys.Verifiers())
	if err != nil {
		l.CheckpointErr = "the signature does not verify"
		return
	}
	l.CheckpointSize, l.CheckpointAt = c.Size, m.Time.UTC()
}

// Verification is the outcome of one verification of every log.
type Verification struct {
	At       time.Time
	Took     time.Duration
	OK       bool
	Records  uint64
	Logs     []*verify.LogReport
	Problems []string
}

// Verify checks every log now, from the streams (what `jisr audit verify`
// does), and keeps the result for the banner.
func (s *Server) Verify(ctx context.Context) *Verification {
	s.verifyMu.Lock()
	defer s.verifyMu.Unlock()
	start := s.cfg.Now()
	res := &Verification{At: start}
	v, err := verify.New(verify.Config{TrustDomain: s.cfg.Federation.TrustDomain.Name(), Keys: s.cfg.Keys})
	if err == nil {
		st := &auditor.Streams{Records: s.cfg.Records, Checkpoints: s.cfg.Checkpoints}
		err = st.Verify(ctx, v, noProgress{})
	}
	if err != nil {
		res.Problems = []string{fmt.Sprintf("the verification could not run: %v", err)}
	} else {
		rep := v.Finish()
		res.OK, res.Logs, res.Records = rep.OK(), rep.Logs, rep.Records
		for _, p := range rep.Problems {
			res.Problems = append(res.Problems, p.String())
		}
	}
	res.Took = s.cfg.Now().Sub(start)
	s.mu.Lock()
	s.verified = res
	s.mu.Unlock()
	if s.metrics != nil {
		s.metrics.verified(res)
	}
	if !res.OK {
		s.cfg.Log.Error("audit verification failed", "problems", len(res.Problems))
	}
	return res
}

type noProgress struct{}

func (noProgress) Start(string, uint64) {}
func (noProgress) Add(int)              {}

// Run verifies the logs every VerifyEvery and refreshes the findings'
// metrics every 15 s, until ctx ends.
func (s *Server) Run(ctx context.Context) {
	verifyT := time.NewTimer(0)
	defer verifyT.Stop()
	findT := time.NewTicker(15 * time.Second)
	defer findT.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-verifyT.C:
			s.Verify(ctx)
			verifyT.Reset(s.cfg.VerifyEvery)
		case <-findT.C:
			s.UpdateMetrics(ctx)
		}
	}
}

// UpdateMetrics evaluates the findings into jisr_console_findings (Run does
// it every 15 s).
func (s *Server) UpdateMetrics(ctx context.Context) {
	if s.metrics == nil {
		return
	}
	fs, err := s.Findings(ctx)
	if err != nil {
		s.cfg.Log.Warn("console findings", "err", err)
		return
	}
	s.metrics.findings(fs)
}

func (s *Server) integrity(w http.ResponseWriter, r *http.Request) {
	logs, err := s.Logs(r.Context())
	if err != nil {
		s.fail(w, http.StatusInternalServerError, err)
		return
	}
	s.render(w, r, &view{Page: "integrity", Logs: logs})
}

// verifyNow runs a verification on demand, then shows the result.
func (s *Server) verifyNow(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Minute)
	defer cancel()
	s.Verify(ctx)
	q := ""
	if l := r.URL.Query().Get("lang"); l != "" {
		q = "?lang=" + string(langFrom(l))
	}
	http.Redirect(w, r, "/console/integrity"+q, http.StatusSeeOther)
}
