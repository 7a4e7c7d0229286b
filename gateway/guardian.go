package gateway

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/jisr-bus/jisr/bus/ckey"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/decision"
)

// Assisted access: a parent or legal guardian acts for a minor on the
// citizen's page. The relation is never taken from the browser: at each
// action the gateway asks the civil registry, through the bus, for the
// household of the signed-in citizen (their own eID, from their sign-in),
// and acts for the person only if the registry shows the citizen as the
// household's head or spouse and the person as a child, alive, under
// MajorityAge. Each check is an audit record (purpose PurposeGuardianship)
// written before anything is answered; anything not shown by the registry
// — an unreachable registry included — is a refusal.

// PurposeGuardianship is the purpose, and the legal basis, of the gateway
// reading a citizen's household to check that they may act for a minor.
const PurposeGuardianship = "guardianship"

// MajorityAge is the age of majority (Moroccan Family Code, art. 209).
const MajorityAge = 18

// householdService and householdMethod are where the civil registry tells a
// household. Its schema comes, like every member's, from the federation's
// descriptor sets: the gateway reads the household's fields by name
// (household.members: eid, relation, given_name, birth_date{year, month,
// day}, alive), and a registry whose schema lacks one of them is refused.
const householdService = "jisr.civilregistry.v1.CivilRegistry"

const householdMethod = "GetHousehold"

// householdFields are the household fields the gateway reads for the check
// (written to the record; none of them leaves the gateway but a ward's
// ckey, given name and birth date, to the guardian).
var householdFields = []string{
	"household.members.eid", "household.members.relation", "household.members.given_name",
	"household.members.birth_date", "household.members.alive",
}

// Errors of a guardianship check.
var (
	// ErrNotGuardian: the civil registry does not show the citizen as the
	// parent or guardian of a living minor with this ckey.
	ErrNotGuardian = errors.New("gateway: the civil registry does not show this guardianship")
	// ErrGuardianshipUnavailable: the registry could not be asked, or the
	// check could not be audited (fail closed).
	ErrGuardianshipUnavailable = errors.New("gateway: guardianship cannot be checked now")
)

// Ward is a minor a guardian may act for, as the civil registry shows them.
type Ward struct {
	CKey      string `json:"ckey"`
	GivenName string `json:"given_name"`
	BirthDate string `json:"birth_date"` // YYYY-MM-DD
}

// Wards returns the minors the citizen with guardianEID (normalised, from
// their own sign-in) may act for: one audited household read.
func (g *Gateway) Wards(ctx context.Context, guardianEID string) ([]Ward, error) {
	ws, _, err := g.guardianship(ctx, guardianEID, "")
	return ws, err
}

// CheckGuardian reports whether the citizen with guardianEID may act for
// the minor whose ckey is ward, now: nil only if the civil registry shows
// it; ErrNotGuardian or ErrGuardianshipUnavailable otherwise. Audited, with
// the ward as the record's citizen and the guardian as its actor.
func (g *Gateway) CheckGuardian(ctx context.Context, guardianEID, ward string) (*Ward, error) {
	if ward == "" {
		return nil, ErrNotGuardian
	}
	_, w, err := g.guardianship(ctx, guardianEID, ward)
	return w, err
}

func (g *Gateway) guardianship(ctx context.Context, guardianEID, ward string) ([]Ward, *Ward, error) {
	start := time.Now()
	fs := g.fs.Load()
	d := &decision.Decision{Time: start.UTC(), Service: householdService, Method: householdMethod,
		Purpose: PurposeGuardianship, LegalBasis: PurposeGuardianship, AssistedBy: decision.AssistedGuardian,
		FederationVersion: fs.version}
	d.VisibleAt = d.Time
	ws, found, err := g.household(ctx, guardianEID, ward, start, d)
	d.Latency = time.Since(start)
	d.Allowed = err == nil
	d.Code, d.Reason = codes.OK, decision.ReasonAllowed
	if err != nil {
		st := decision.Refuse(codes.Unavailable, decision.ReasonProviderError, "no household").GRPCStatus()
		if r := new(decision.Refusal); errors.As(err, &r) {
			st = r.GRPCStatus()
		}
		d.Code, d.Reason = st.Code(), decision.ReasonOf(st)
	}
	if !g.cfg.Unsafe.SkipAudit {
		if aerr := g.cfg.Audit.Append(context.WithoutCancel(ctx), d); aerr != nil {
			g.log.ErrorContext(ctx, "audit append of a guardianship check failed: refused", "err", aerr)
			return nil, nil, ErrGuardianshipUnavailable
		}
	}
	if err != nil {
		if r := new(decision.Refusal); errors.As(err, &r) && r.Reason == decision.ReasonNotGuardian {
			return nil, nil, ErrNotGuardian
		}
		g.log.WarnContext(ctx, "guardianship check failed", "err", err)
		return nil, nil, errors.Join(ErrGuardianshipUnavailable, err)
	}
	return ws, found, nil
}

// household reads the guardian's household and finds the wards in it.
func (g *Gateway) household(ctx context.Context, guardianEID, ward string, now time.Time, d *decision.Decision) ([]Ward, *Ward, error) {
	fs := g.fs.Load()
	eid, err := fs.fed.NormaliseEID(guardianEID)
	if err != nil {
		return nil, nil, decision.Refuse(codes.InvalidArgument, decision.ReasonBadEID, "the eID does not match the federation's eID format")
	}
	gck := g.cfg.Keyer.CKey(eid)
	d.ActorCKey, d.CKey = gck, gck
	if ward != "" {
		d.CKey = ward
	}
	provs := fs.fed.Providers(householdService)
	if len(provs) != 1 {
		return nil, nil, decision.Refuse(codes.Unavailable, decision.ReasonProviderUnavailable, "no single civil registry in the federation")
	}
	d.Provider = provs[0].Name
	m, err := fs.cat.Lookup(subject.ServiceToken(householdService), householdMethod)
	if err != nil {
		return nil, nil, decision.Refuse(codes.NotFound, decision.ReasonUnknownMethod, "unknown service or method")
	}
	req := m.Input.New()
	req.Set(m.EID, protoreflect.ValueOfString(eid))
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(req.Interface())
	if err != nil {
		return nil, nil, err
	}
	q := subject.Query{Consumer: PurposeCitizen, Provider: d.Provider, Service: m.ServiceToken, Method: m.Name, CKey: gck}
	tctx, cancel := context.WithTimeout(ctx, g.cfg.DefaultTimeout)
	defer cancel()
	reply, err := g.forward(tctx, q, data, PurposeGuardianship)
	if err != nil {
		return nil, nil, err
	}
	resp := m.Output.New()
	if err := proto.Unmarshal(reply, resp.Interface()); err != nil {
		return nil, nil, decision.Refuse(codes.Internal, decision.ReasonProviderError, "the provider's reply is not a valid household")
	}
	members, err := householdMembers(resp)
	if err != nil {
		return nil, nil, decision.Refuse(codes.Internal, decision.ReasonProviderError, "%s", err.Error())
	}
	d.Fields = householdFields
	guardian := false
	for _, mb := range members {
		if n, err := fs.fed.NormaliseEID(mb.eid); err == nil && n == eid && mb.alive &&
			(mb.relation == "RELATION_HEAD" || mb.relation == "RELATION_SPOUSE") {
			guardian = true
		}
	}
	var ws []Ward
	var found *Ward
	for _, mb := range members {
		n, err := fs.fed.NormaliseEID(mb.eid)
		if !guardian || err != nil || n == eid || mb.relation != "RELATION_CHILD" || !mb.alive || !minor(mb.born, now) {
			continue
		}
		b := mb.born
		w := Ward{CKey: g.cfg.Keyer.CKey(n), GivenName: mb.givenName,
			BirthDate: time.Date(int(b.year), time.Month(b.month), int(b.day), 0, 0, 0, 0, time.UTC).Format(time.DateOnly)}
		ws = append(ws, w)
		if ward != "" && ckey.Equal(w.CKey, ward) {
			found = &ws[len(ws)-1]
		}
	}
	if ward != "" && found == nil {
		return nil, nil, decision.Refuse(codes.PermissionDenied, decision.ReasonNotGuardian, "the civil registry does not show this guardianship")
	}
	if found != nil {
		f := *found
		found = &f
	}
	return ws, found, nil
}

// member is one household member as the gateway reads it.
type member struct {
	eid, givenName string
	relation       string // the enum value's name, e.g. RELATION_CHILD
	alive          bool
	born           date
}

type date struct{ year, month, day int64 }

// householdMembers reads household.members from a GetHousehold reply by
// field name: an error if the registry's schema lacks one of the fields
// the check needs, or gives one another kind (fail closed).
func householdMembers(resp protoreflect.Message) ([]member, error) {
	hf, err := fieldOf(resp.Descriptor(), "household", protoreflect.MessageKind)
	if err != nil {
		return nil, err
	}
	hd := hf.Message()
	mf, err := fieldOf(hd, "members", protoreflect.MessageKind)
	if err != nil {
		return nil, err
	}
	if !mf.IsList() {
		return nil, errors.New("the household's members are not a list")
	}
	md := mf.Message()
	fEID, err1 := fieldOf(md, "eid", protoreflect.StringKind)
	fRel, err2 := fieldOf(md, "relation", protoreflect.EnumKind)
	fName, err3 := fieldOf(md, "given_name", protoreflect.StringKind)
	fBorn, err4 := fieldOf(md, "birth_date", protoreflect.MessageKind)
	fAlive, err5 := fieldOf(md, "alive", protoreflect.BoolKind)
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return nil, err
	}
	bd := fBorn.Message()
	fY, err1 := fieldOf(bd, "year", protoreflect.Int32Kind)
	fM, err2 := fieldOf(bd, "month", protoreflect.Int32Kind)
	fD, err3 := fieldOf(bd, "day", protoreflect.Int32Kind)
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, err
	}
	if !resp.Has(hf) {
		return nil, nil
	}
	list := resp.Get(hf).Message().Get(mf).List()
	out := make([]member, 0, list.Len())
	for i := range list.Len() {
		mb := list.Get(i).Message()
		rel := ""
		if ev := fRel.Enum().Values().ByNumber(mb.Get(fRel).Enum()); ev != nil {
			rel = string(ev.Name())
		}
		b := mb.Get(fBorn).Message()
		out = append(out, member{
			eid: mb.Get(fEID).String(), givenName: mb.Get(fName).String(), relation: rel, alive: mb.Get(fAlive).Bool(),
			born: date{year: b.Get(fY).Int(), month: b.Get(fM).Int(), day: b.Get(fD).Int()},
		})
	}
	return out, nil
}

// fieldOf is md's singular-or-list field name of kind k.
func fieldOf(md protoreflect.MessageDescriptor, name protoreflect.Name, k protoreflect.Kind) (protoreflect.FieldDescriptor, error) {
	f := md.Fields().ByName(name)
	if f == nil || f.Kind() != k || f.IsMap() {
		return nil, errors.New("the civil registry's household schema has no " + string(md.FullName()) + "." + string(name) + " of kind " + k.String())
	}
	return f, nil
}

// minor reports whether a person born on b is under MajorityAge at now; a
// missing or impossible birth date is not a minor (fail closed).
func minor(b date, now time.Time) bool {
	if b.year <= 0 || b.month < 1 || b.month > 12 || b.day < 1 || b.day > 31 {
		return false
	}
	born := time.Date(int(b.year), time.Month(b.month), int(b.day), 0, 0, 0, 0, time.UTC)
	if born.Day() != int(b.day) || born.After(now) {
		return false
	}
	return now.UTC().Before(born.AddDate(MajorityAge, 0, 0))
}
