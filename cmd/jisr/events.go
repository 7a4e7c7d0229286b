package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/jisr-bus/jisr/bus/loopback"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/cmd/internal/process"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

func newEventsCmd(g *process.Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Life events: see what a member receives, record a death, ask for a replay",
		Long: `Life events (docs/events.md): the civil registry records a death, a birth, a
marriage or an address; tax records an income declaration. The gateway delivers
each event — audited, minimised — into the stream of every member whose event
rule in the federation file covers it, and each member's adapter hands its
events to its backend's jisr.events.v1.EventSink, exactly once.`,
	}
	cmd.AddCommand(newEventsTailCmd(g), newEventsRecordDeathCmd(g), newEventsReplayCmd(g))
	return cmd
}

func newEventsTailCmd(g *process.Env) *cobra.Command {
	var (
		as     string
		since  time.Duration
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "tail --as MEMBER",
		Short: "Print the events delivered to a member, as that member reads its own stream",
		Long: `Print the events delivered to a member, read from its own stream with the
member's identity (a member reads no other member's stream). It does not
acknowledge anything: the adapter's delivery to the backend is unaffected.`,
		Example: `  jisr events tail --as cnss
  jisr events tail --as health --since 1h --follow=false`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if as == "" {
				return process.UsageError{Err: fmt.Errorf("--as is required")}
			}
			return tailEvents(cmd.Context(), g, as, since, follow, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&as, "as", "", "the member whose events to print (its SVID is used)")
	cmd.Flags().DurationVar(&since, "since", 24*time.Hour, "print the events delivered since this long ago")
	cmd.Flags().BoolVar(&follow, "follow", true, "keep printing new events until Ctrl-C")
	return cmd
}

func tailEvents(ctx context.Context, g *process.Env, member string, since time.Duration, follow bool, out io.Writer) error {
	nc, src, err := g.Connect(ctx, member)
	if err != nil {
		return err
	}
	defer func() { nc.Close(); src.Close() }()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	start := time.Now().Add(-since)
	c, err := js.OrderedConsumer(ctx, subject.EventStream(member), jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start,
	})
	if err != nil {
		return fmt.Errorf("the event stream of %s: %w (run `jisr nats init`)", member, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return err
	}
	left := info.NumPending
	for follow || left > 0 {
		msg, err := c.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if follow {
				continue
			}
			return err
		}
		if md, err := msg.Metadata(); err == nil {
			left = md.NumPending
		}
		printEvent(out, msg)
	}
	return nil
}

func printEvent(out io.Writer, msg jetstream.Msg) {
	s, err := subject.ParseDelivery(msg.Subject())
	ev := &eventsv1.Event{}
	if err != nil || proto.Unmarshal(msg.Data(), ev) != nil {
		fmt.Fprintf(out, "?  %s (not a delivery)\n", msg.Subject())
		return
	}
	how := "rule " + msg.Headers().Get("Jisr-Event-Rule")
	if msg.Headers().Get("Jisr-Event-Replay") == "true" {
		how += ", replayed"
	}
	body, _ := protojson.MarshalOptions{}.Marshal(ev)
	fmt.Fprintf(out, "%s  %-16s from %-15s (%s)  %s\n", ev.GetTime().AsTime().UTC().Format(time.RFC3339), s.Type, s.Publisher, how, body)
}

func newEventsRecordDeathCmd(g *process.Env) *cobra.Command {
	var (
		eid, backend, date string
	)
	cmd := &cobra.Command{
		Use:   "record-death --eid EID",
		Short: "Record a death at the reference civil registry (its admin method), which publishes PersonDied",
		Long: `Record a death at the reference civil-registry backend (its office API,
jisr.civilregistry.v1.CivilRegistryAdmin/RecordDeath, never offered to the
federation). The backend updates its register and publishes PersonDied through
its adapter; the gateway delivers it to every member whose event rule covers
deaths (in the demo CNSS, which stops the pension, and health) and to no other.`,
		Example: `  jisr events record-death --eid AB123456
  jisr events record-death --eid AB123456 --date 2026-11-27`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if eid == "" {
				return process.UsageError{Err: fmt.Errorf("--eid is required")}
			}
			req := &civilv1.RecordDeathRequest{Eid: eid}
			if date != "" {
				t, err := time.Parse(time.DateOnly, date)
				if err != nil {
					return process.UsageError{Err: fmt.Errorf("--date %q: a date such as 2026-11-27", date)}
				}
				req.DateOfDeath = &jisrv1.Date{Year: int32(t.Year()), Month: int32(t.Month()), Day: int32(t.Day())}
			}
			cc, err := localClient(g, backend, "civil-registry", 7100)
			if err != nil {
				return err
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			res, err := civilv1.NewCivilRegistryAdminClient(cc).RecordDeath(ctx, req)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "death recorded: event %s delivered to %d member(s)\n", res.GetEventId(), res.GetDeliveries())
			return nil
		},
	}
	cmd.Flags().StringVar(&eid, "eid", "", "the citizen's eID")
	cmd.Flags().StringVar(&date, "date", "", "the date of death, YYYY-MM-DD (default: today)")
	cmd.Flags().StringVar(&backend, "backend", "", "the civil registry's reference backend (default: its dev port, 127.0.0.1:7101; loopback only)")
	return cmd
}

func newEventsReplayCmd(g *process.Env) *cobra.Command {
	var (
		as, adapter string
		since       time.Duration
	)
	cmd := &cobra.Command{
		Use:     "replay --as MEMBER --since DURATION",
		Short:   "Ask, through a member's adapter, for the events since a time again (when its rule allows replays)",
		Example: `  jisr events replay --as cnss --since 720h`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if as == "" || since <= 0 {
				return process.UsageError{Err: fmt.Errorf("--as and --since are required")}
			}
			cc, err := localClient(g, adapter, as, 7000)
			if err != nil {
				return err
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Minute)
			defer cancel()
			res, err := eventsv1.NewEventPublisherClient(cc).Replay(ctx, &eventsv1.ReplayRequest{Since: timestamppb.New(time.Now().Add(-since))})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d event(s) delivered again to %s\n", res.GetReplayed(), as)
			return nil
		},
	}
	cmd.Flags().StringVar(&as, "as", "", "the member asking (its adapter asks the gateway)")
	cmd.Flags().DurationVar(&since, "since", 0, "replay the events published since this long ago")
	cmd.Flags().StringVar(&adapter, "adapter", "", "the member's adapter (default: its dev port, 127.0.0.1:700N; loopback only)")
	return cmd
}

// localClient dials addr, or member's dev port at base, in plaintext: a
// loopback address only.
func localClient(g *process.Env, addr, member string, base int) (*grpc.ClientConn, error) {
	if addr == "" {
		fed, err := g.Federation()
		if err != nil {
			return nil, err
		}
		addr = process.DevPort(fed, member, base)
	}
	creds, err := loopback.ClientCredentials(addr, nil) // plaintext on loopback only
	if err != nil {
		return nil, process.UsageError{Err: fmt.Errorf("%s: %w", addr, err)}
	}
	return grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
}
