package node

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/jisr-bus/jisr/gateway"
	"github.com/jisr-bus/jisr/gateway/citizen"
	"github.com/jisr-bus/jisr/gateway/decision"
)

// assisted is the citizens' sign-in as the citizen-facing routes see it
// (consent API, access log, page, live view): a request that names another
// person (?for=<ckey>, citizen.ParamFor) is served for that person only if
// the civil registry shows, now, the signed-in citizen as their parent or
// guardian (gateway.CheckGuardian: one audited household read, with the
// citizen's own eID from their sign-in; fail closed). The browser's word
// for the relation is never taken: only the ckey it names, checked.
type assisted struct {
	*citizen.Auth
	n *Node // its gateway exists once the HTTP side serves
}

// AuthenticateRequest returns the ckey the request acts for: the signed-in
// citizen's, or the ward's it names once the guardianship is checked.
func (a *assisted) AuthenticateRequest(r *http.Request) (string, error) {
	subject, _, _, err := a.AuthenticateActor(r)
	return subject, err
}

// AuthenticateActor returns the ckey the request acts for (subject) and,
// when someone acts for another person, the actor's ckey and how they
// assist (decision.AssistedGuardian).
func (a *assisted) AuthenticateActor(r *http.Request) (subject, actor, assistedBy string, err error) {
	ck, agent, err := a.Auth.AuthenticateAgent(r)
	if err != nil {
		return "", "", "", err
	}
	// Only the URL names the ward: never a form field or a body.
	vals, named := r.URL.Query()[citizen.ParamFor]
	if !named {
		if agent != "" { // the citizen, present, helped by a counter agent
			return ck, agent, decision.AssistedAgent, nil
		}
		return ck, "", "", nil
	}
	if len(vals) != 1 || vals[0] == "" { // ?for= empty or twice: never "myself" by accident
		return "", "", "", citizen.ErrNotGuardian
	}
	// The guardian's own eID, sealed at their sign-in: a bearer session
	// alone cannot act for anyone.
	_, eid, err := a.Auth.EID(r)
	if err != nil {
		return "", "", "", err
	}
	if a.n.gw == nil {
		return "", "", "", citizen.ErrGuardianshipUnavailable
	}
	w, err := a.n.gw.CheckGuardian(r.Context(), eid, vals[0])
	switch {
	case errors.Is(err, gateway.ErrNotGuardian):
		return "", "", "", citizen.ErrNotGuardian
	case err != nil:
		return "", "", "", citizen.ErrGuardianshipUnavailable
	}
	how := decision.AssistedGuardian
	if agent != "" { // a guardian helped by a counter agent: both named
		how += "," + decision.AssistedAgent + ":" + agent
	}
	return w.CKey, ck, how, nil
}

// wards answers the signed-in citizen the minors the civil registry shows
// them the parent or guardian of (GET /v1/wards; an audited household read).
func (n *Node) wards(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	_, eid, err := n.citizens.EID(r)
	if errors.Is(err, citizen.ErrCrossOrigin) {
		writeJSONError(w, http.StatusForbidden, "cross-origin request refused")
		return
	}
	if err != nil {
		writeJSONError(w, http.StatusUnauthorized, "sign in again to act for your children")
		return
	}
	ws, err := n.gw.Wards(r.Context(), eid)
	if err != nil {
		writeJSONError(w, http.StatusServiceUnavailable, "the civil registry cannot be asked now; retry later")
		return
	}
	if ws == nil {
		ws = []gateway.Ward{}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"wards": ws})
}
