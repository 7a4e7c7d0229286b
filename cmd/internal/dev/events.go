package dev

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jisr-bus/jisr/bus/loopback"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
	"github.com/jisr-bus/jisr/services/demodata"
)

// Pensioner is a living, AMO-covered pensioner of the demo population: the
// citizen whose death the printed tour records.
func Pensioner() string {
	for b := 0; b < 100; b++ {
		blk := demodata.Block(demodata.DefaultSeed, b)
		for k := range blk {
			if c := &blk[k]; c.Alive() && c.Work == demodata.Retired && c.AMOCovered {
				return c.EID
			}
		}
	}
	return ""
}

// seedEvents publishes a few life events through the civil registry's
// adapter, as its backend would: a birth (CNSS receives it), an address
// change (tax receives it, shown in the citizen's access log after 30
// days) and a marriage (no rule covers it: no one receives it). Their ids
// are fixed, so a restart publishes nothing twice.
func (d *devFederation) seedEvents(ctx context.Context) error {
	addr := ""
	for _, a := range d.adapters {
		if a.Member() == "civil-registry" {
			addr = a.Addr()
		}
	}
	cs := Showcase()
	if addr == "" || len(cs) < 3 {
		return nil
	}
	creds, err := loopback.ClientCredentials(addr, nil) // the dev adapter listens on loopback
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer cc.Close()
	pub := eventsv1.NewEventPublisherClient(cc)
	now := time.Now().UTC()
	today := &jisrv1.Date{Year: int32(now.Year()), Month: int32(now.Month()), Day: int32(now.Day())}
	for _, ev := range []*eventsv1.Event{
		{Id: "dev-seed-born-" + cs[2].EID, Eid: cs[2].EID, Payload: &eventsv1.Event_PersonBorn{PersonBorn: &eventsv1.PersonBorn{DateOfBirth: today}}},
		{Id: "dev-seed-address-" + cs[0].EID, Eid: cs[0].EID, Payload: &eventsv1.Event_AddressChanged{AddressChanged: &eventsv1.AddressChanged{
			Place: &jisrv1.Place{Commune: "Agdal-Ryad", Province: "Rabat", Country: "MA"}, Street: "12 avenue de France", Effective: today}}},
		{Id: "dev-seed-marriage-" + cs[0].EID, Eid: cs[0].EID, Payload: &eventsv1.Event_MarriageRecorded{MarriageRecorded: &eventsv1.MarriageRecorded{Date: today, ActNumber: "M-2026-0001"}}},
	} {
		ev.Time = timestamppb.New(now)
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := pub.Publish(cctx, &eventsv1.PublishRequest{Event: ev})
		cancel()
		if err != nil {
			return fmt.Errorf("seeding life events: %w", err)
		}
	}
	return nil
}

// eventsTour is the printed tour of life events.
func eventsTour(ep Endpoints) string {
	tax := ""
	for _, a := range ep.Adapters {
		if a.Member == "tax" {
			tax = a.Addr
		}
	}
	eid := Pensioner()
	if tax == "" || eid == "" {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nLife events — the civil registry records a death; CNSS stops the pension (docs/events.md):\n\n")
	fmt.Fprintf(&b, "  jisr events tail --as cnss                 # what CNSS receives (a birth is already there)\n")
	fmt.Fprintf(&b, "  %s   # a pensioner: AFFILIATION_STATUS_RETIRED\n", affiliation(tax, eid))
	fmt.Fprintf(&b, "  jisr events record-death --eid %-10s   # delivered to cnss and health; tax has no death rule\n", eid)
	fmt.Fprintf(&b, "  %s   # now AFFILIATION_STATUS_INACTIVE: the pension stopped\n", affiliation(tax, eid))
	fmt.Fprintf(&b, "  jisr audit query --citizen %s --provider civil-registry   # one record per delivery\n", eid)
	return b.String()
}

func affiliation(addr, eid string) string {
	return fmt.Sprintf(`grpcurl -plaintext -H 'jisr-purpose: income-verification' -d '{"eid": "%s"}' %s jisr.cnss.v1.SocialSecurity/GetAffiliation`, eid, addr)
}
