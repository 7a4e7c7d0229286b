package process

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/gateway/audit/auditor"
)

// AuditorStreams connects as the auditor and opens the two streams.
func AuditorStreams(ctx context.Context, g *Env) (*auditor.Streams, func(), error) {
	nc, src, err := g.Connect(ctx, "auditor")
	if err != nil {
		return nil, nil, err
	}
	closeFn := func() { nc.Close(); src.Close() }
	st, err := auditor.Open(ctx, nc)
	if err != nil {
		closeFn()
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			err = fmt.Errorf("%w (create the streams with `jisr nats init`)", err)
		}
		return nil, nil, err
	}
	return st, closeFn, nil
}

// CitizenKey turns --citizen (an eID, or "-": read from stdin) into the
// citizen key, locally.
func CitizenKey(g *Env, raw string, stdin io.Reader) (string, error) {
	if raw == "-" {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && line == "" {
			return "", UsageError{errors.New("--citizen -: no eID on stdin")}
		}
		raw = line
	}
	fed, err := g.Federation()
	if err != nil {
		return "", err
	}
	eid, err := fed.NormaliseEID(strings.TrimSpace(raw))
	if err != nil {
		return "", UsageError{errors.New("--citizen: not an eID of this federation's format")}
	}
	keyer, err := g.Keyer()
	if err != nil {
		return "", fmt.Errorf("--citizen needs the federation's citizen key to find the records: %w", err)
	}
	return keyer.CKey(eid), nil
}
