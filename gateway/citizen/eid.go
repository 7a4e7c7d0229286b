package citizen

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/jisr-bus/jisr/bus/ckey"
)

// The citizen's own eID is needed once the citizen asks to preview the
// values a provider would release (the request to the provider carries it,
// like every query). The server keeps no eID: at sign-in it is sealed
// (AES-256-GCM, a key that never leaves this process) into an HttpOnly,
// SameSite=Strict cookie bound to the session's citizen, and opened only
// for a preview.

const eidAAD = "jisr citizen eid v1"

type sealedEID struct {
	EID     string `json:"e"`
	CKey    string `json:"k"`
	Expires int64  `json:"x"`
}

func (a *Auth) eidCookieName() string {
	if a.cfg.Secure {
		return "__Host-jisr_eid"
	}
	return "jisr_eid"
}

func (a *Auth) setEIDCookie(w http.ResponseWriter, eid, ck string) {
	plain, _ := json.Marshal(sealedEID{EID: eid, CKey: ck, Expires: a.cfg.Now().Add(a.cfg.MaxAge).Unix()})
	nonce := make([]byte, a.logins.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return
	}
	v := base64.RawURLEncoding.EncodeToString(a.logins.aead.Seal(nonce, nonce, plain, []byte(eidAAD)))
	http.SetCookie(w, &http.Cookie{Name: a.eidCookieName(), Value: v, Path: "/", HttpOnly: true, Secure: a.cfg.Secure, SameSite: http.SameSiteStrictMode})
}

func (a *Auth) clearEIDCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: a.eidCookieName(), Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: a.cfg.Secure, SameSite: http.SameSiteStrictMode})
}

// ErrNoEID: the request carries no sealed eID of the signed-in citizen (a
// bearer session, or a cookie from another session or process).
var ErrNoEID = errors.New("citizen: the citizen's eID is not available to this request: sign in again")

// EID authenticates r (as AuthenticateRequest) and returns the citizen's
// key and normalised eID, opened from the sealed cookie of their sign-in.
func (a *Auth) EID(r *http.Request) (ck, eid string, err error) {
	if ck, err = a.AuthenticateRequest(r); err != nil {
		return "", "", err
	}
	c, err := r.Cookie(a.eidCookieName())
	if err != nil {
		return "", "", ErrNoEID
	}
	b, err := base64.RawURLEncoding.DecodeString(c.Value)
	ns := a.logins.aead.NonceSize()
	if err != nil || len(b) < ns {
		return "", "", ErrNoEID
	}
	plain, err := a.logins.aead.Open(nil, b[:ns], b[ns:], []byte(eidAAD))
	if err != nil {
		return "", "", ErrNoEID
	}
	var s sealedEID
	if json.Unmarshal(plain, &s) != nil || !a.cfg.Now().Before(time.Unix(s.Expires, 0)) || !ckey.Equal(s.CKey, ck) ||
		!ckey.Equal(a.cfg.Keyer.CKey(s.EID), ck) {
		return "", "", ErrNoEID
	}
	return ck, s.EID, nil
}
