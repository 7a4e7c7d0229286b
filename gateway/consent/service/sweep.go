package service

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jisr-bus/jisr/gateway/audit"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/decision"
)

// sweep runs the consent sweeper (consent.Sweeper) while this replica
// holds the sweeper's lease; without it, it waits to take it. The lease
// holder alone opens the consent service's audit log (one writer per log:
// the log's records are deduplicated by their leaf), so replicas never
// write it at once.
func (s *Service) sweep(ctx context.Context, o options) {
	defer close(s.sweepDone)
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	holder := base64.RawURLEncoding.EncodeToString(b)
	store := s.Service.Store
	for {
		ok, err := store.TakeLease(ctx, holder, o.lease)
		if err != nil && ctx.Err() == nil {
			s.cfg.Log.Warn("consent sweeper: lease not taken; will retry", "err", err)
		}
		if ok {
			s.lead(ctx, holder, o)
		}
		if ctx.Err() != nil {
			if ok {
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				_ = store.DropLease(dctx, holder)
				cancel()
			}
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(o.lease / 3):
		}
	}
}

// lead sweeps while the lease is renewed: it stops (cancelling the sweep
// and closing the log) as soon as the lease is another's, or cannot be
// renewed for half its length — well before another replica may take it.
func (s *Service) lead(ctx context.Context, holder string, o options) {
	log := s.cfg.Log
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		t := time.NewTicker(o.lease / 4)
		defer t.Stop()
		renewed := time.Now()
		for {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
			}
			ok, err := s.Service.Store.TakeLease(lctx, holder, o.lease)
			switch {
			case ok:
				renewed = time.Now()
			case err == nil, time.Since(renewed) > o.lease/2:
				log.Warn("consent sweeper: lease lost; the sweep stops", "err", err)
				cancel()
				return
			}
		}
	})
	l, err := s.openAudit(lctx)
	if err != nil {
		if lctx.Err() == nil {
			log.Error("consent sweeper: the consent service's audit log cannot be opened: no transition is stored until it can", "err", err)
			select {
			case <-lctx.Done():
			case <-time.After(o.retry):
			}
		}
		return
	}
	defer func() {
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer ccancel()
		if err := l.Close(cctx); err != nil {
			log.Warn("consent service's audit log not closed cleanly", "err", err)
		}
	}()
	appendRecord := func(ctx context.Context, d *decision.Decision) error { return l.Append(ctx, d) }
	// The operator's actions (`jisr consent grant|revoke`) are answered by
	// the log's one writer, each recorded first; unsubscribed (the
	// deferred calls run last in, first out) before the log is closed.
	op, err := consent.ServeOperator(s.cfg.Conn, s.Service, appendRecord)
	if err != nil {
		log.Error("consent service: the operator API is not served: `jisr consent grant|revoke` fail until it is", "err", err)
	} else {
		defer func() { _ = op.Drain() }()
	}
	log.Info("consent sweeper running", "audit_log", consent.AuditLogID)
	sw := &consent.Sweeper{
		Store: s.Service.Store, Log: log, Retry: o.retry, OnTransition: o.onTransition,
		Audit: appendRecord,
	}
	if err := sw.Run(lctx); err != nil && lctx.Err() == nil {
		log.Error("consent sweeper stopped; restarting", "err", err)
		select {
		case <-lctx.Done():
		case <-time.After(o.retry):
		}
	}
}

// openAudit opens the consent service's audit log (resuming it where the
// stream says it ended), its checkpoint key in <certs>/audit.
func (s *Service) openAudit(ctx context.Context) (*audit.Log, error) {
	td := s.cfg.Federation.TrustDomain.Name()
	kp, created, err := checkpoint.EnsureKey(s.cfg.AuditKeyDir, consent.AuditLogID, checkpoint.Origin(td, consent.AuditLogID))
	if err != nil {
		return nil, fmt.Errorf("checkpoint key: %w", err)
	}
	if created {
		s.cfg.Log.Info("created the consent audit log's checkpoint key: publish the .pub file to auditors", "dir", s.cfg.AuditKeyDir)
	}
	opts := []audit.Option{audit.WithLogger(s.cfg.Log), audit.WithAPIPrefix(s.cfg.AuditAPIPrefix)}
	if tc := s.cfg.TrustedCheckpoint; tc != "" {
		if err := os.MkdirAll(filepath.Dir(tc), 0o700); err != nil {
			// A read-only disk (a pod): the log still verifies against its
			// signed checkpoints in NATS, without the copy outside it.
			s.cfg.Log.Warn("consent audit log: no directory for the trusted checkpoint; kept in NATS only", "file", tc, "err", err)
		} else {
			opts = append(opts, audit.WithTrustedCheckpoint(tc))
		}
	}
	return audit.Open(ctx, audit.Config{Conn: s.cfg.Conn, TrustDomain: td, LogID: consent.AuditLogID, Key: kp}, opts...)
}
