package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/natsconf"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/cmd/internal/process"
)

// spireOptions are the flags of `jisr spire entries`.
type spireOptions struct {
	Parent    string // the agent (or node alias) every entry hangs off
	Selectors string // k8s or unix
	Namespace string // k8s: the namespace of the hub's workloads and of the adapters
	UnixUID   int    // unix: every workload on this one uid (-1: one user per workload)
	TTL       int    // X.509-SVID TTL in seconds (0: the server's default)
	Format    string // json or text
}

func newSpireCmd(g *process.Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "spire",
		Short: "SPIRE registration entries for the federation's identities",
	}
	var o spireOptions
	entries := &cobra.Command{
		Use:   "entries",
		Short: "Print the SPIRE registration entries of every identity in the federation file",
		Long: `Print one SPIRE registration entry (SPIFFE ID, parent, selectors) per workload
and identity of the federation file, as the JSON that
'spire-server entry create -data' loads, or as a table (--format text).

Workloads and the identities they hold:
  nats            spiffe://<td>/nats
  gateway         spiffe://<td>/gateway
  consent         spiffe://<td>/consent (jisr consent serve, the only holder of the signing keys)
  auditor         spiffe://<td>/auditor
  operator        spiffe://<td>/operator and spiffe://<td>/audit-operator (jisr nats init)
  adapter-<m>     spiffe://<td>/member/<m>
  backend-<m>     spiffe://<td>/member/<m>

Selectors (--selectors):
  k8s    k8s:ns:<namespace> and k8s:sa:jisr-<workload> (the Helm chart's service accounts)
  unix   unix:user:jisr-<workload>, or unix:uid:<n> for every workload with --unix-uid
         (one host, one user: each process then receives every SVID and keeps its own
         by SPIFFE ID; jisr dev's one process holds them all)

deploy/spire/ holds the output for deploy/federation.yaml (see docs/spire.md).`,
		Example: `  jisr spire entries > entries.json && spire-server entry create -data entries.json
  jisr spire entries --selectors unix --parent spiffe://jisr.internal/spire/agent/join_token/TOKEN --format text`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fed, err := g.Federation()
			if err != nil {
				return err
			}
			es, err := spireEntries(fed, o)
			if err != nil {
				return err
			}
			return writeSpireEntries(cmd.OutOrStdout(), es, o.Format)
		},
	}
	f := entries.Flags()
	f.StringVar(&o.Parent, "parent", "", "parent SPIFFE ID of every entry: the agent's ID, or a node alias (default spiffe://<td>/spire/node/jisr)")
	f.StringVar(&o.Selectors, "selectors", "k8s", "selector kind: k8s (namespace and service account) or unix (user or uid)")
	f.StringVar(&o.Namespace, "namespace", "jisr", "k8s: the namespace the chart is installed in")
	f.IntVar(&o.UnixUID, "unix-uid", -1, "unix: select every workload by this uid instead of one user per workload (a single-user host or a test)")
	f.IntVar(&o.TTL, "x509-ttl", 0, "X.509-SVID TTL in seconds (0: the SPIRE server's default)")
	f.StringVar(&o.Format, "format", "json", "json (spire-server entry create -data) or text")
	cmd.AddCommand(entries)
	return cmd
}

// spireEntry is one registration entry, in the JSON of
// `spire-server entry create -data`.
type spireEntry struct {
	SpiffeID  string          `json:"spiffe_id"`
	ParentID  string          `json:"parent_id"`
	Selectors []spireSelector `json:"selectors"`
	X509TTL   int             `json:"x509_svid_ttl,omitempty"`
	// Hint names the identity (member-cnss, gateway): SPIRE hands it to the
	// workload with the SVID; it must differ between the SVIDs of one
	// workload, since the agent serves only the first SVID of a hint.
	Hint     string `json:"hint,omitempty"`
	workload string
}

type spireSelector struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// spireWorkload is one kind of process and the identities it holds.
type spireWorkload struct {
	name string
	ids  []spiffeid.ID
}

func spireWorkloads(fed *federation.Federation) []spireWorkload {
	ws := []spireWorkload{
		{"nats", []spiffeid.ID{fed.ID("nats")}},
		{"gateway", []spiffeid.ID{fed.ID("gateway")}},
		{"consent", []spiffeid.ID{fed.ID("consent")}},
		{"auditor", []spiffeid.ID{fed.ID("auditor")}},
		{"operator", []spiffeid.ID{fed.ID(subject.Operator), fed.ID(natsconf.AuditOperator)}},
	}
	for _, m := range fed.Members {
		ws = append(ws, spireWorkload{"adapter-" + m.Name, []spiffeid.ID{m.ID}}, spireWorkload{"backend-" + m.Name, []spiffeid.ID{m.ID}})
	}
	return ws
}

// spireEntries builds the entries; every identity of the federation file has
// at least one.
func spireEntries(fed *federation.Federation, o spireOptions) ([]spireEntry, error) {
	parent := o.Parent
	if parent == "" {
		parent = spiffeid.RequireFromPath(fed.TrustDomain, "/spire/node/jisr").String()
	}
	p, err := spiffeid.FromString(parent)
	if err != nil {
		return nil, process.UsageError{Err: fmt.Errorf("--parent %q: %w", parent, err)}
	}
	if p.TrustDomain() != fed.TrustDomain {
		return nil, process.UsageError{Err: fmt.Errorf("--parent %s is not in the trust domain %s", p, fed.TrustDomain)}
	}
	var sel func(workload string) []spireSelector
	switch o.Selectors {
	case "k8s":
		if o.Namespace == "" {
			return nil, process.UsageError{Err: fmt.Errorf("--namespace is required with --selectors k8s")}
		}
		sel = func(w string) []spireSelector {
			return []spireSelector{{"k8s", "ns:" + o.Namespace}, {"k8s", "sa:jisr-" + w}}
		}
	case "unix":
		sel = func(w string) []spireSelector {
			if o.UnixUID >= 0 {
				return []spireSelector{{"unix", "uid:" + strconv.Itoa(o.UnixUID)}}
			}
			return []spireSelector{{"unix", "user:jisr-" + w}}
		}
	default:
		return nil, process.UsageError{Err: fmt.Errorf("--selectors %q: use k8s or unix", o.Selectors)}
	}
	if o.TTL < 0 {
		return nil, process.UsageError{Err: fmt.Errorf("--x509-ttl must not be negative")}
	}
	var out []spireEntry
	seen := map[string]bool{}
	for _, w := range spireWorkloads(fed) {
		for _, id := range w.ids {
			// SPIRE refuses a second entry with the same ID, parent and
			// selectors (an adapter and its backend on one --unix-uid).
			key := fmt.Sprint(id, p, sel(w.name))
			if seen[key] {
				continue
			}
			seen[key] = true
			out = append(out, spireEntry{SpiffeID: id.String(), ParentID: p.String(), Selectors: sel(w.name), X509TTL: o.TTL,
				Hint: strings.ReplaceAll(strings.TrimPrefix(id.Path(), "/"), "/", "-"), workload: w.name})
		}
	}
	return out, nil
}

func writeSpireEntries(w io.Writer, es []spireEntry, format string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Entries []spireEntry `json:"entries"`
		}{es})
	case "text":
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SPIFFE ID\tPARENT\tSELECTORS\tWORKLOAD")
		for _, e := range es {
			var sels []string
			for _, s := range e.Selectors {
				sels = append(sels, s.Type+":"+s.Value)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.SpiffeID, e.ParentID, strings.Join(sels, ","), e.workload)
		}
		return tw.Flush()
	}
	return process.UsageError{Err: fmt.Errorf("--format %q: use json or text", format)}
}
