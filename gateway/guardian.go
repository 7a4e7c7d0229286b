package gateway

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus/ckey"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/decision"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
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
// household.
var householdService = civilv1.CivilRegistry_ServiceDesc.ServiceName

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
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(&civilv1.GetHouseholdRequest{Eid: eid})
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
	var hh civilv1.GetHouseholdResponse
	if err := proto.Unmarshal(reply, &hh); err != nil {
		return nil, nil, decision.Refuse(codes.Internal, decision.ReasonProviderError, "the provider's reply is not a valid household")
	}
	d.Fields = householdFields
	guardian := false
	for _, mb := range hh.GetHousehold().GetMembers() {
		if n, err := fs.fed.NormaliseEID(mb.GetEid()); err == nil && n == eid && mb.GetAlive() &&
			(mb.GetRelation() == civilv1.Relation_RELATION_HEAD || mb.GetRelation() == civilv1.Relation_RELATION_SPOUSE) {
			guardian = true
		}
	}
	var ws []Ward
	var found *Ward
	for _, mb := range hh.GetHousehold().GetMembers() {
		n, err := fs.fed.NormaliseEID(mb.GetEid())
		if !guardian || err != nil || n == eid || mb.GetRelation() != civilv1.Relation_RELATION_CHILD || !mb.GetAlive() || !minor(mb, now) {
			continue
		}
		b := mb.GetBirthDate()
		w := Ward{CKey: g.cfg.Keyer.CKey(n), GivenName: mb.GetGivenName(),
			BirthDate: time.Date(int(b.GetYear()), time.Month(b.GetMonth()), int(b.GetDay()), 0, 0, 0, 0, time.UTC).Format(time.DateOnly)}
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

// minor reports whether m is under MajorityAge at now; a missing or
// impossible birth date is not a minor (fail closed).
func minor(m *civilv1.HouseholdMember, now time.Time) bool {
	b := m.GetBirthDate()
	if b.GetYear() <= 0 || b.GetMonth() < 1 || b.GetMonth() > 12 || b.GetDay() < 1 || b.GetDay() > 31 {
		return false
	}
	born := time.Date(int(b.GetYear()), time.Month(b.GetMonth()), int(b.GetDay()), 0, 0, 0, 0, time.UTC)
	if born.Day() != int(b.GetDay()) || born.After(now) {
		return false
	}
	return now.UTC().Before(born.AddDate(MajorityAge, 0, 0))
}
