package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/jisr-bus/jisr/bus/subject"
)

// Discover asks each member's provider registration for its INFO, by name
// ($SRV.INFO.jisr-<member>: only that member may subscribe there, so an
// answer cannot be forged by another member; and only the operator may ask),
// and returns the answers received before ctx ends, or as soon as every
// member has answered once.
func Discover(ctx context.Context, nc *nats.Conn, members []string) ([]micro.Info, error) {
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	for _, m := range members {
		if err := nc.PublishRequest(subject.Discovery+"."+micro.InfoVerb.String()+"."+subject.DiscoveryName(m), inbox, nil); err != nil {
			return nil, err
		}
	}
	var out []micro.Info
	answered := map[string]bool{}
	for len(answered) < len(members) {
		msg, err := sub.NextMsgWithContext(ctx)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			break
		}
		if err != nil {
			return out, err
		}
		var info micro.Info
		if json.Unmarshal(msg.Data, &info) != nil || info.Name != subject.DiscoveryName(info.Metadata[MetaMember]) {
			continue
		}
		answered[info.Metadata[MetaMember]] = true
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name+out[i].ID < out[j].Name+out[j].ID })
	return out, nil
}

// PrintDirectory writes the federation's services; with live (from
// Discover), whether each provider is registered and runs this schema.
func PrintDirectory(w io.Writer, offers []Offer, live []micro.Info, showLive bool) error {
	var b strings.Builder
	for _, o := range offers {
		methods := make([]string, len(o.Methods))
		for i, m := range o.Methods {
			methods[i] = m.Name
			if m.Predicate {
				methods[i] += "?"
			}
		}
		fmt.Fprintf(&b, "%s — %s\n", o.Member, o.Title)
		fmt.Fprintf(&b, "  service     %s\n  descriptor  %s\n  methods     %s\n", o.Service, o.Digest, strings.Join(methods, ", "))
		if showLive {
			fmt.Fprintf(&b, "  live        %s\n", liveState(o, live))
		}
		b.WriteString("\n")
	}
	b.WriteString("(? marks a predicate: a yes/no answer)\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func liveState(o Offer, live []micro.Info) string {
	var states []string
	for _, in := range live {
		if in.Metadata[MetaMember] != o.Member {
			continue
		}
		svcs := strings.Split(in.Metadata[MetaServices], ",")
		digests := strings.Split(in.Metadata[MetaDigests], ",")
		st := "not this service"
		for i, s := range svcs {
			if s == o.Service && i < len(digests) {
				st = "same descriptor"
				if digests[i] != o.Digest {
					st = "DIFFERENT DESCRIPTOR " + digests[i]
				}
			}
		}
		states = append(states, fmt.Sprintf("%s v%s: %s", in.ID, in.Version, st))
	}
	if len(states) == 0 {
		return "not registered (no provider adapter answers)"
	}
	return strings.Join(states, "; ")
}

// PrintGrants writes what a consumer may call, rule by rule.
func PrintGrants(w io.Writer, consumer string, grants []Grant) error {
	if len(grants) == 0 {
		_, err := fmt.Fprintf(w, "%s may call nothing: no access rule names it as the consumer\n", consumer)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s may call:\n", consumer)
	for _, g := range grants {
		basis := g.LegalBasis
		if g.Law != "" {
			basis += " (" + g.Law + ")"
		}
		fields := "the whole reply"
		if len(g.Fields) > 0 {
			fields = strings.Join(g.Fields, ", ")
		}
		methods := make([]string, len(g.Methods))
		for i, m := range g.Methods {
			methods[i] = m
			for _, p := range g.Predicates {
				if p == m {
					methods[i] += "?"
				}
			}
		}
		fmt.Fprintf(tw, "\n  rule\t%s\n", g.Rule)
		fmt.Fprintf(tw, "  provider\t%s  %s\n", g.Provider, g.Service)
		fmt.Fprintf(tw, "  methods\t%s\n", strings.Join(methods, ", "))
		fmt.Fprintf(tw, "  legal basis\t%s\n", basis)
		fmt.Fprintf(tw, "  purposes\t%s\n", strings.Join(g.Purposes, ", "))
		fmt.Fprintf(tw, "  fields\t%s\n", fields)
	}
	fmt.Fprintln(tw, "\n(? marks a predicate: a yes/no answer)")
	return tw.Flush()
}
