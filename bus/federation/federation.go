// Package federation loads the federation file, the single source of truth of
// a jisr federation: its trust domain, its members and the services they
// provide, the citizen eID format, and the access rules between members.
//
// Invariant: a *Federation returned by Load or Parse is fully validated —
// every name that will become a NATS subject token is a safe token, every
// rule names a known consumer, a provider that really provides the service,
// and a legal basis with what that basis needs (a mandate names its law).
// Everything derived from it (NATS permissions, gateway policy) can trust it.
package federation

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"gopkg.in/yaml.v3"
)

// DefaultTrustDomain is used when the federation file names none.
const DefaultTrustDomain = "jisr.internal"

// Legal bases a rule may rest on.
const (
	BasisConsent         = "consent"          // the citizen agreed; a consent token is required
	BasisExplicitRequest = "explicit_request" // the citizen asked for the procedure; a token is required
	BasisMandate         = "mandate"          // a law allows it; no token, the rule names the law
)

// Reserved identity names: they are not members and a member may not take them,
// because they name inboxes and SPIFFE IDs of the federation's own parts.
var reserved = []string{"gateway", "consent", "auditor", "nats", "operator", "jisr"}

// Sentinel errors callers may branch on.
var (
	ErrInvalid       = errors.New("federation: invalid federation file")
	ErrUnknownMember = errors.New("federation: unknown member")
	ErrBadEID        = errors.New("eID does not match the federation's eID format")
)

// Federation is the validated federation file.
type Federation struct {
	TrustDomain spiffeid.TrustDomain
	EID         EIDFormat
	Members     []*Member
	Rules       []*Rule
	// EventRules say which member receives which life events of which
	// publisher (events.go).
	EventRules []*EventRule
	// Limits are the federation-wide defaults of every member's limits
	// (DefaultLimits where the file names none).
	Limits Limits
	// Anomalies are the thresholds of the auditor's console's findings
	// (zero fields: the console's defaults).
	Anomalies Anomalies
	// Labels are the plain-words names, by language, of the fields and
	// purposes the rules name (what the citizen's page shows).
	Labels Labels
	// DescriptorSets are the protobuf descriptor sets of services not
	// linked into jisr (a member that joined later), by file name and
	// SHA-256 digest; a signed bundle carries their content (bus/descset).
	DescriptorSets []DescriptorSetRef
	// Descriptors hold the content of those sets, by file name, when the
	// federation was read by Load (the files beside the federation file);
	// nil after Parse. Their digests are checked where they are used
	// (bus/descset.Services).
	Descriptors map[string][]byte

	members  map[string]*Member
	byID     map[string]*Member // SPIFFE ID string → member
	services map[string][]*Member
}

// EIDFormat says what a citizen identifier looks like once normalised.
type EIDFormat struct {
	Pattern   *regexp.Regexp
	MaxLength int
}

// String describes the format for a refusal's message: the pattern, the
// length and the normalisation (ASCII only, trimmed, upper-cased).
func (e EIDFormat) String() string {
	return fmt.Sprintf("expected ASCII matching %s, at most %d characters, after trimming spaces and upper-casing", e.Pattern, e.MaxLength)
}

// Member is one information system joined to the federation.
type Member struct {
	Name     string
	Title    string
	Titles   map[string]string // the title by language ("fr", "ar"), for citizens
	ID       spiffeid.ID
	Provides []string // full protobuf service names
	Limits   Limits   // the member's own limits, defaults filled in
	// Publishes are the life events the member records and may publish
	// (event type names such as PersonDied): the gateway refuses any other.
	Publishes []string
}

// Limits are a member's fair share of the gateway: the gateway refuses at
// once, with ResourceExhausted, a query over any of them.
type Limits struct {
	// QueriesPerSecond is the sustained rate of queries (a token bucket
	// refilled at this rate), Burst the bucket's size: how many may come at once.
	QueriesPerSecond float64
	Burst            int
	// InFlight bounds the member's queries the gateway is deciding at once.
	InFlight int
	// MaxRequestBytes bounds one query message (payload and headers).
	MaxRequestBytes int
	// EventsPerSecond is the sustained rate of the member's life events
	// (docs/events.md), a bucket of its own with a burst of as many.
	EventsPerSecond float64
}

// DefaultLimits apply where the federation file sets no limits.
var DefaultLimits = Limits{QueriesPerSecond: 200, Burst: 400, InFlight: 64, MaxRequestBytes: 64 << 10, EventsPerSecond: 5000}

// MaxRequestBytesCeiling is the largest max_request_bytes a file may set:
// NATS's default max_payload, which no message can exceed anyway.
const MaxRequestBytesCeiling = 1 << 20

// limitsFile is the YAML shape of limits: a field left out is inherited.
type limitsFile struct {
	QueriesPerSecond *float64 `yaml:"queries_per_second"`
	Burst            *int     `yaml:"burst"`
	InFlight         *int     `yaml:"in_flight"`
	MaxRequestBytes  *int     `yaml:"max_request_bytes"`
	EventsPerSecond  *float64 `yaml:"events_per_second"`
}

// resolve fills the fields lf leaves out from base and validates the result.
func (lf *limitsFile) resolve(base Limits) (Limits, error) {
	l := base
	if lf != nil {
		if lf.QueriesPerSecond != nil {
			l.QueriesPerSecond = *lf.QueriesPerSecond
		}
		if lf.Burst != nil {
			l.Burst = *lf.Burst
		}
		if lf.InFlight != nil {
			l.InFlight = *lf.InFlight
		}
		if lf.MaxRequestBytes != nil {
			l.MaxRequestBytes = *lf.MaxRequestBytes
		}
		if lf.EventsPerSecond != nil {
			l.EventsPerSecond = *lf.EventsPerSecond
		}
	}
	switch {
	case !(l.QueriesPerSecond > 0) || l.QueriesPerSecond > 1e6:
		return l, fmt.Errorf("queries_per_second %v: must be more than 0 and at most 1000000", l.QueriesPerSecond)
	case l.Burst < 1 || l.Burst > 1e6:
		return l, fmt.Errorf("burst %d: must be between 1 and 1000000", l.Burst)
	case l.InFlight < 1 || l.InFlight > 1e5:
		return l, fmt.Errorf("in_flight %d: must be between 1 and 100000", l.InFlight)
	case !(l.EventsPerSecond > 0) || l.EventsPerSecond > 1e6:
		return l, fmt.Errorf("events_per_second %v: must be more than 0 and at most 1000000", l.EventsPerSecond)
	case l.MaxRequestBytes < 1024 || l.MaxRequestBytes > MaxRequestBytesCeiling:
		return l, fmt.Errorf("max_request_bytes %d: must be between 1024 and %d", l.MaxRequestBytes, MaxRequestBytesCeiling)
	}
	return l, nil
}

// Rule lets one consumer call some methods of one provider's service.
type Rule struct {
	Name       string
	Consumer   string
	Provider   string
	Service    string // full protobuf service name
	Methods    []string
	Fields     []string // response field paths that may be released; empty = the whole response
	Purposes   []string
	LegalBasis string
	Law        string        // for a mandate: the law it rests on
	LogDelay   time.Duration // delay before the access shows in the citizen's access log (mandates only)

	// Params fixes the parameters of the rule's predicate methods: request
	// field name → value (as written in the file; the catalog checks each
	// against the request's descriptor). A caller may send no value or
	// exactly this one; the gateway forwards this one.
	Params map[string]string
	// PredicateLimit bounds the predicate queries about one citizen under
	// this rule (zero Count = no limit).
	PredicateLimit PredicateLimit
}

// PredicateLimit is at most Count predicate queries about one citizen in any
// Period.
type PredicateLimit struct {
	Count  int
	Period time.Duration
}

// file is the YAML shape. Kept separate from Federation so the on-disk
// format can evolve without touching the validated model.
type file struct {
	TrustDomain string `yaml:"trust_domain"`
	EID         struct {
		Pattern   string `yaml:"pattern"`
		MaxLength int    `yaml:"max_length"`
	} `yaml:"eid"`
	Limits  *limitsFile `yaml:"limits"`
	Members []struct {
		Name     string            `yaml:"name"`
		Title    string            `yaml:"title"`
		Titles   map[string]string `yaml:"titles"`
		Provides []string          `yaml:"provides"`
		Limits   *limitsFile       `yaml:"limits"`
		// Publishes: the event types the member may publish (events.go).
		Publishes []string `yaml:"publishes"`
	} `yaml:"members"`
	Labels struct {
		Fields   map[string]map[string]string `yaml:"fields"`
		Purposes map[string]map[string]string `yaml:"purposes"`
		Values   map[string]map[string]string `yaml:"values"`
	} `yaml:"labels"`
	Rules []struct {
		Name       string   `yaml:"name"`
		Consumer   string   `yaml:"consumer"`
		Provider   string   `yaml:"provider"`
		Service    string   `yaml:"service"`
		Methods    []string `yaml:"methods"`
		Fields     []string `yaml:"fields"`
		Purposes   []string `yaml:"purposes"`
		LegalBasis string   `yaml:"legal_basis"`
		Law        string   `yaml:"law"`
		LogDelay   string   `yaml:"access_log_delay"`
		// Rule-level predicate parameters and limit (see Rule).
		Params         map[string]string `yaml:"params"`
		PredicateLimit *limitFile        `yaml:"predicate_limit"`
	} `yaml:"rules"`
	Anomalies  *anomaliesFile  `yaml:"anomalies"`
	EventRules []eventRuleFile `yaml:"event_rules"`
	// DescriptorSets: see Federation.DescriptorSets.
	DescriptorSets []struct {
		File   string `yaml:"file"`
		SHA256 string `yaml:"sha256"`
	} `yaml:"descriptor_sets"`
}

// DescriptorSetRef names one descriptor set: a plain file name (beside the
// federation file; in a bundle, the key of its content) and the hex SHA-256
// of its content.
type DescriptorSetRef struct {
	File   string
	SHA256 string
}

// Anomalies are the thresholds of the auditor's console's anomaly findings
// (gateway/console.Rules documents each; zero: the default).
type Anomalies struct {
	Window           time.Duration
	ProbingRefusals  int
	DistinctCitizens int
	DistinctFactor   float64
	Baseline         time.Duration
	RepeatedQueries  int
	HoursFrom        int
	HoursTo          int
	LogStall         time.Duration
}

type anomaliesFile struct {
	Window           string  `yaml:"window"`
	ProbingRefusals  int     `yaml:"probing_refusals"`
	DistinctCitizens int     `yaml:"distinct_citizens"`
	DistinctFactor   float64 `yaml:"distinct_factor"`
	Baseline         string  `yaml:"baseline"`
	RepeatedQueries  int     `yaml:"repeated_queries"`
	UsualHours       []int   `yaml:"usual_hours"`
	LogStall         string  `yaml:"log_stall"`
}

func (af *anomaliesFile) resolve() (Anomalies, error) {
	var a Anomalies
	if af == nil {
		return a, nil
	}
	for _, d := range []struct {
		name string
		v    string
		to   *time.Duration
	}{{"window", af.Window, &a.Window}, {"baseline", af.Baseline, &a.Baseline}, {"log_stall", af.LogStall, &a.LogStall}} {
		if d.v == "" {
			continue
		}
		v, err := time.ParseDuration(d.v)
		if err != nil || v <= 0 {
			return a, fmt.Errorf("%s %q: a positive duration", d.name, d.v)
		}
		*d.to = v
	}
	if af.ProbingRefusals < 0 || af.DistinctCitizens < 0 || af.DistinctFactor < 0 || af.RepeatedQueries < 0 {
		return a, errors.New("thresholds are not negative")
	}
	a.ProbingRefusals, a.DistinctCitizens, a.DistinctFactor, a.RepeatedQueries = af.ProbingRefusals, af.DistinctCitizens, af.DistinctFactor, af.RepeatedQueries
	switch len(af.UsualHours) {
	case 0:
	case 2:
		if af.UsualHours[0] < 0 || af.UsualHours[1] > 24 || af.UsualHours[0] >= af.UsualHours[1] {
			return a, fmt.Errorf("usual_hours %v: [from, to) UTC, 0 <= from < to <= 24", af.UsualHours)
		}
		a.HoursFrom, a.HoursTo = af.UsualHours[0], af.UsualHours[1]
	default:
		return a, fmt.Errorf("usual_hours %v: [from, to)", af.UsualHours)
	}
	return a, nil
}

type limitFile struct {
	Count  int    `yaml:"count"`
	Period string `yaml:"period"`
}

// Load reads and validates a federation file.
func Load(path string) (*Federation, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("federation: %w", err)
	}
	f, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(f.DescriptorSets) > 0 {
		f.Descriptors = make(map[string][]byte, len(f.DescriptorSets))
		for _, ref := range f.DescriptorSets {
			raw, err := os.ReadFile(filepath.Join(filepath.Dir(path), ref.File))
			if err != nil {
				return nil, fmt.Errorf("federation: descriptor set named by %s: %w", path, err)
			}
			f.Descriptors[ref.File] = raw
		}
	}
	return f, nil
}

// Parse validates a federation file's content.
func Parse(data []byte) (*Federation, error) {
	var raw file
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}

	fed := &Federation{
		members:  map[string]*Member{},
		byID:     map[string]*Member{},
		services: map[string][]*Member{},
	}
	td := raw.TrustDomain
	if td == "" {
		td = DefaultTrustDomain
	}
	var err error
	if fed.TrustDomain, err = spiffeid.TrustDomainFromString(td); err != nil {
		return nil, bad("trust_domain %q: %v", td, err)
	}

	pattern := raw.EID.Pattern
	if pattern == "" {
		return nil, bad("eid.pattern is required (a regular expression for a normalised eID)")
	}
	re, err := regexp.Compile("^(?:" + pattern + ")$")
	if err != nil {
		return nil, bad("eid.pattern: %v", err)
	}
	fed.EID = EIDFormat{Pattern: re, MaxLength: raw.EID.MaxLength}
	if fed.EID.MaxLength == 0 {
		fed.EID.MaxLength = 32
	}
	if fed.EID.MaxLength < 0 || fed.EID.MaxLength > 256 {
		return nil, bad("eid.max_length %d: must be between 1 and 256", fed.EID.MaxLength)
	}

	if fed.Limits, err = raw.Limits.resolve(DefaultLimits); err != nil {
		return nil, bad("limits.%v", err)
	}
	if fed.Anomalies, err = raw.Anomalies.resolve(); err != nil {
		return nil, bad("anomalies.%v", err)
	}

	if len(raw.Members) == 0 {
		return nil, bad("members: at least one member is required")
	}
	for i, rm := range raw.Members {
		if err := CheckName(rm.Name); err != nil {
			return nil, bad("members[%d].name: %v", i, err)
		}
		if slices.Contains(reserved, rm.Name) {
			return nil, bad("members[%d].name %q is reserved for the federation's own parts", i, rm.Name)
		}
		if _, dup := fed.members[rm.Name]; dup {
			return nil, bad("members[%d].name %q appears twice", i, rm.Name)
		}
		id, err := spiffeid.FromSegments(fed.TrustDomain, "member", rm.Name)
		if err != nil {
			return nil, bad("members[%d].name %q: %v", i, rm.Name, err)
		}
		m := &Member{Name: rm.Name, Title: rm.Title, Titles: rm.Titles, ID: id}
		for lang, t := range rm.Titles {
			if !langCode.MatchString(lang) || strings.TrimSpace(t) == "" {
				return nil, bad("members[%d].titles: %q is not a language code with a title", i, lang)
			}
		}
		if m.Limits, err = rm.Limits.resolve(fed.Limits); err != nil {
			return nil, bad("members[%d] (%s).limits.%v", i, rm.Name, err)
		}
		for j, svc := range rm.Provides {
			if err := CheckServiceName(svc); err != nil {
				return nil, bad("members[%d].provides[%d]: %v", i, j, err)
			}
			if slices.Contains(m.Provides, svc) {
				return nil, bad("members[%d].provides[%d] %q appears twice", i, j, svc)
			}
			m.Provides = append(m.Provides, svc)
			fed.services[svc] = append(fed.services[svc], m)
		}
		if m.Publishes, err = checkPublishes(rm.Publishes); err != nil {
			return nil, bad("members[%d] (%s).publishes: %v", i, rm.Name, err)
		}
		fed.Members = append(fed.Members, m)
		fed.members[m.Name] = m
		fed.byID[id.String()] = m
	}

	fed.Labels = Labels{Fields: raw.Labels.Fields, Purposes: raw.Labels.Purposes, Values: raw.Labels.Values}
	for kind, m := range map[string]map[string]map[string]string{"fields": fed.Labels.Fields, "purposes": fed.Labels.Purposes, "values": fed.Labels.Values} {
		for key, byLang := range m {
			for lang, t := range byLang {
				if !langCode.MatchString(lang) || strings.TrimSpace(t) == "" {
					return nil, bad("labels.%s.%s: %q is not a language code with a label", kind, key, lang)
				}
			}
		}
	}

	names := map[string]bool{}
	for i, rr := range raw.Rules {
		where := fmt.Sprintf("rules[%d]", i)
		if rr.Name != "" {
			where = fmt.Sprintf("rules[%d] (%s)", i, rr.Name)
			if names[rr.Name] {
				return nil, bad("%s: name appears twice", where)
			}
			names[rr.Name] = true
		}
		r := &Rule{
			Name: rr.Name, Consumer: rr.Consumer, Provider: rr.Provider, Service: rr.Service,
			Methods: rr.Methods, Fields: rr.Fields, Purposes: rr.Purposes,
			LegalBasis: rr.LegalBasis, Law: strings.TrimSpace(rr.Law),
		}
		if r.Name == "" {
			r.Name = fmt.Sprintf("%s-%s-%d", r.Consumer, r.Provider, i)
		}
		if _, ok := fed.members[r.Consumer]; !ok {
			return nil, bad("%s.consumer %q is not a member", where, r.Consumer)
		}
		prov, ok := fed.members[r.Provider]
		if !ok {
			return nil, bad("%s.provider %q is not a member", where, r.Provider)
		}
		if r.Consumer == r.Provider {
			return nil, bad("%s: consumer and provider are the same member; a member reads its own data without jisr", where)
		}
		if !slices.Contains(prov.Provides, r.Service) {
			return nil, bad("%s.service %q is not provided by %q", where, r.Service, r.Provider)
		}
		if len(r.Methods) == 0 {
			return nil, bad("%s.methods: at least one method is required", where)
		}
		for j, m := range r.Methods {
			if err := CheckToken(m); err != nil {
				return nil, bad("%s.methods[%d]: %v", where, j, err)
			}
		}
		for j, f := range r.Fields {
			if err := checkFieldPath(f); err != nil {
				return nil, bad("%s.fields[%d]: %v", where, j, err)
			}
		}
		if len(r.Purposes) == 0 {
			return nil, bad("%s.purposes: at least one purpose is required", where)
		}
		for j, p := range r.Purposes {
			if err := CheckPurpose(p); err != nil {
				return nil, bad("%s.purposes[%d]: %v", where, j, err)
			}
		}
		switch r.LegalBasis {
		case BasisConsent, BasisExplicitRequest:
			if r.Law != "" {
				return nil, bad("%s.law is only for legal_basis %q", where, BasisMandate)
			}
		case BasisMandate:
			if r.Law == "" {
				return nil, bad("%s.law: a mandate must name the law it rests on", where)
			}
		default:
			return nil, bad("%s.legal_basis %q: must be one of %s, %s, %s", where, r.LegalBasis, BasisConsent, BasisExplicitRequest, BasisMandate)
		}
		if rr.LogDelay != "" {
			if r.LegalBasis != BasisMandate {
				return nil, bad("%s.access_log_delay is only for mandates", where)
			}
			d, err := time.ParseDuration(rr.LogDelay)
			if err != nil || d < 0 {
				return nil, bad("%s.access_log_delay %q: a duration such as 720h", where, rr.LogDelay)
			}
			r.LogDelay = d
		}
		if err := parsePredicateRule(r, rr.Params, rr.PredicateLimit, where); err != nil {
			return nil, err
		}
		fed.Rules = append(fed.Rules, r)
	}
	if err := fed.parseEventRules(raw.EventRules); err != nil {
		return nil, err
	}
	seenSets := map[string]bool{}
	for i, d := range raw.DescriptorSets {
		if d.File == "" || d.File != filepath.Base(d.File) || strings.HasPrefix(d.File, ".") || !isSetName(d.File) {
			return nil, bad("descriptor_sets[%d]: file %q must be a plain file name (letters, digits, '-', '_', '.')", i, d.File)
		}
		if seenSets[d.File] {
			return nil, bad("descriptor_sets: %s named twice", d.File)
		}
		seenSets[d.File] = true
		sum := strings.TrimPrefix(d.SHA256, "sha256:")
		if len(sum) != 64 || strings.Trim(sum, "0123456789abcdef") != "" {
			return nil, bad("descriptor_sets[%d] (%s): sha256 must be 64 lowercase hex digits", i, d.File)
		}
		fed.DescriptorSets = append(fed.DescriptorSets, DescriptorSetRef{File: d.File, SHA256: sum})
	}
	return fed, nil
}

// parsePredicateRule validates a rule's predicate parameters and limit. The
// parameter names and values are checked against the request descriptors by
// the catalog; here only their shape.
func parsePredicateRule(r *Rule, params map[string]string, limit *limitFile, where string) error {
	for name, v := range params {
		if !isIdent(name) {
			return fmt.Errorf("%w: %s.params: %q is not a request field name", ErrInvalid, where, name)
		}
		if v == "" || len(v) > 256 {
			return fmt.Errorf("%w: %s.params.%s: a value of 1 to 256 characters", ErrInvalid, where, name)
		}
	}
	if len(params) > 0 {
		r.Params = params
	}
	if limit == nil {
		return nil
	}
	d, err := time.ParseDuration(limit.Period)
	if err != nil || d <= 0 || limit.Count <= 0 {
		return fmt.Errorf("%w: %s.predicate_limit: a positive count and a period such as 24h", ErrInvalid, where)
	}
	r.PredicateLimit = PredicateLimit{Count: limit.Count, Period: d}
	return nil
}

func isSetName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// Member returns the named member.
func (f *Federation) Member(name string) (*Member, error) {
	m, ok := f.members[name]
	if !ok {
		return nil, ErrUnknownMember
	}
	return m, nil
}

// MemberByID returns the member a SPIFFE ID belongs to.
func (f *Federation) MemberByID(id spiffeid.ID) (*Member, error) {
	m, ok := f.byID[id.String()]
	if !ok {
		return nil, ErrUnknownMember
	}
	return m, nil
}

// Providers returns the members that provide a service (full protobuf name).
func (f *Federation) Providers(service string) []*Member {
	return f.services[service]
}

// Provides reports whether the member named provider provides service (full
// protobuf name).
func (f *Federation) Provides(provider, service string) bool {
	for _, m := range f.services[service] {
		if m.Name == provider {
			return true
		}
	}
	return false
}

// Services returns every service provided in the federation, sorted.
func (f *Federation) Services() []string {
	out := make([]string, 0, len(f.services))
	for s := range f.services {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// ID returns the SPIFFE ID of one of the federation's own parts
// ("gateway", "consent", "auditor", "nats", "operator").
func (f *Federation) ID(part string) spiffeid.ID {
	return spiffeid.RequireFromSegments(f.TrustDomain, part)
}

// Identities returns every SPIFFE ID the federation needs an SVID for:
// the NATS server, the gateway, the consent service, the auditor, the
// operator (who creates the streams and buckets) and each member.
func (f *Federation) Identities() []spiffeid.ID {
	ids := []spiffeid.ID{f.ID("nats"), f.ID("gateway"), f.ID("consent"), f.ID("auditor"), f.ID("operator")}
	for _, m := range f.Members {
		ids = append(ids, m.ID)
	}
	return ids
}

// NormaliseEID trims and upper-cases a raw eID and checks it against the
// federation's format. The error never contains the eID. Only ASCII is
// read: a letter whose upper case is ASCII (ſ, ı) or a Unicode space would
// otherwise give a second spelling of a citizen's eID.
func (f *Federation) NormaliseEID(raw string) (string, error) {
	if len(raw) > f.EID.MaxLength+16 {
		return "", ErrBadEID
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] >= 0x80 {
			return "", ErrBadEID
		}
	}
	eid := strings.ToUpper(strings.TrimSpace(raw))
	if eid == "" || len(eid) > f.EID.MaxLength || !f.EID.Pattern.MatchString(eid) {
		return "", ErrBadEID
	}
	// The pattern is the federation's, so check the subject-safety invariant here
	// too: a normalised eID is printable ASCII without subject metacharacters.
	for i := 0; i < len(eid); i++ {
		c := eid[i]
		if c <= ' ' || c >= 0x7f || c == '.' || c == '*' || c == '>' {
			return "", ErrBadEID
		}
	}
	return eid, nil
}

// CheckName checks a member name: lower-case ASCII letters, digits and '-',
// starting with a letter, at most 63 characters. Member names become NATS
// subject tokens, SPIFFE ID segments and inbox prefixes.
func CheckName(s string) error {
	if s == "" || len(s) > 63 {
		return errors.New("a name is 1 to 63 characters")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c == '-' && i > 0 || c >= '0' && c <= '9' && i > 0
		if !ok {
			return fmt.Errorf("%q: use lower-case letters, digits and '-', starting with a letter", s)
		}
	}
	return nil
}

// CheckServiceName checks a full protobuf service name (package.Service).
func CheckServiceName(s string) error {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return fmt.Errorf("%q: a full protobuf service name such as jisr.civilregistry.v1.CivilRegistry", s)
	}
	for _, p := range parts {
		if !isIdent(p) {
			return fmt.Errorf("%q: a full protobuf service name such as jisr.civilregistry.v1.CivilRegistry", s)
		}
	}
	return nil
}

// CheckToken checks a protobuf identifier used as one subject token (a method name).
func CheckToken(s string) error {
	if !isIdent(s) {
		return fmt.Errorf("%q: letters, digits and '_', starting with a letter", s)
	}
	return nil
}

// CheckPurpose checks a purpose code: lower-case letters, digits, '-' and '_'.
func CheckPurpose(s string) error {
	if s == "" || len(s) > 64 {
		return errors.New("a purpose is 1 to 64 characters")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return errors.New("a purpose uses lower-case letters, digits, '-' and '_'")
		}
	}
	return nil
}

func checkFieldPath(s string) error {
	if s == "" {
		return errors.New("empty field path")
	}
	for _, p := range strings.Split(s, ".") {
		if !isIdent(p) {
			return fmt.Errorf("%q: a field path such as person.birth.date", s)
		}
	}
	return nil
}

func isIdent(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= '0' && c <= '9' && i > 0) {
			return false
		}
	}
	return true
}

// Labels are plain-words names by language: key (a field path, a purpose)
// → language code → text.
type Labels struct {
	Fields   map[string]map[string]string
	Purposes map[string]map[string]string
	Values   map[string]map[string]string // enum value names (SEX_FEMALE) shown in a preview
}

var langCode = regexp.MustCompile(`^[a-z]{2,3}$`)

// Field returns the label of a field path in lang, "" if none.
func (l Labels) Field(path, lang string) string { return l.Fields[path][lang] }

// Purpose returns the label of a purpose in lang, "" if none.
func (l Labels) Purpose(p, lang string) string { return l.Purposes[p][lang] }

// TitleIn is the member's title in lang, else its title.
func (m *Member) TitleIn(lang string) string {
	if t := m.Titles[lang]; t != "" {
		return t
	}
	return m.Title
}
