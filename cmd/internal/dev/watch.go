package dev

import (
	"context"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/fedwatch"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/cmd/internal/process"
)

// watchFederation gives the embedded NATS server every new signed
// federation version, as the gateway takes it: a member added by a version
// can connect without a restart.
func (d *devFederation) watchFederation(ctx context.Context, g *process.Env) error {
	trusted, err := process.TrustedGovernanceKeys(g)
	if err != nil {
		return err
	}
	kv, done, err := process.FederationBucket(ctx, g, subject.Operator)
	if err != nil {
		return err
	}
	w, err := fedwatch.Start(ctx, fedwatch.Config{
		Bucket: kv, Trusted: trusted, Component: "nats", Log: g.Log.With("component", "nats"),
		Apply: func(_ *federation.Bundle, fed *federation.Federation) error { return d.NATS.SetFederation(fed) },
	})
	if err != nil {
		done()
		return err
	}
	d.stopWatch = func() { w.Stop(); done() }
	return nil
}
