package accesslog

import (
	_ "embed"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus/ckey"
	"github.com/jisr-bus/jisr/bus/federation"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

// Paths of the HTTP side.
const (
	PathPrefix = "/access-log/"
	CookieName = "jisr_citizen"
)

// GRPCPrefix is where the gRPC service is mounted on an HTTP mux (the server
// must speak HTTP/2; h2c in development).
var GRPCPrefix = "/" + auditv1.AccessLog_ServiceDesc.ServiceName + "/"

// DemoLogin signs a citizen in by their eID alone. Development only: in
// production the national e-ID platform authenticates the citizen and the
// Authenticator checks its tokens (see docs/audit.md).
type DemoLogin struct {
	Federation *federation.Federation
	Keyer      *ckey.Keyer
	Sessions   *Sessions
}

// Routes returns the HTTP handlers of the access log, keyed by mux pattern:
// the page, the JSON API, the login (when demo is not nil) and the gRPC
// service.
func (s *Service) Routes(demo *DemoLogin) map[string]http.Handler {
	g := grpc.NewServer()
	s.Register(g)
	routes := map[string]http.Handler{
		"GET " + PathPrefix + "{$}":         http.HandlerFunc(s.page),
		"GET " + PathPrefix + "v1/accesses": http.HandlerFunc(s.listHTTP),
		"GET " + PathPrefix + "v1/keys":     http.HandlerFunc(s.keysHTTP),
		"POST " + PathPrefix + "logout":     http.HandlerFunc(logout),
		"POST " + GRPCPrefix:                g,
	}
	if demo != nil {
		routes["POST "+PathPrefix+"login"] = http.HandlerFunc(demo.login)
	} else {
		routes["POST "+PathPrefix+"login"] = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			writeError(w, http.StatusNotFound, "sign in through the national e-ID platform")
		})
	}
	return routes
}

func (s *Service) listHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	ck, err := s.authenticate(r.Context(), credentialOf(r))
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="jisr access log"`)
		writeError(w, http.StatusUnauthorized, "sign in with the national e-ID to read your access log")
		return
	}
	q := r.URL.Query()
	req := &auditv1.ListAccessesRequest{PageToken: q.Get("page_token"), IncludeRefused: q.Get("include_refused") == "true"}
	if v := q.Get("page_size"); v != "" {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			writeError(w, http.StatusBadRequest, "page_size must be a number")
			return
		}
		req.PageSize = int32(n)
	}
	resp, err := s.List(r.Context(), ck, req)
	switch {
	case errors.Is(err, ErrBadRequest):
		writeError(w, http.StatusBadRequest, "invalid page_token or page_size")
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "the access log cannot be read now; retry later")
		return
	}
	writeProto(w, resp)
}

func (s *Service) keysHTTP(w http.ResponseWriter, _ *http.Request) {
	writeProto(w, &auditv1.GetLogKeysResponse{Keys: s.cfg.Keys.VerifierKeys()})
}

func credentialOf(r *http.Request) string {
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	if c, err := r.Cookie(CookieName); err == nil {
		return c.Value
	}
	return ""
}

func (d *DemoLogin) login(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	raw, err := eidFrom(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "send the eID as JSON {\"eid\": ...} or as the form field eid")
		return
	}
	eid, err := d.Federation.NormaliseEID(raw)
	if err != nil {
		writeError(w, http.StatusBadRequest, "the eID does not match the federation's eID format")
		return
	}
	token, exp := d.Sessions.Issue(d.Keyer.CKey(eid))
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: token, Path: PathPrefix, Expires: exp,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"token": token, "expires": exp.UTC().Format(time.RFC3339)})
}

func eidFrom(r *http.Request) (string, error) {
	r.Body = http.MaxBytesReader(nil, r.Body, 4096)
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/json" {
		var body struct {
			EID string `json:"eid"`
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return "", err
		}
		if err := json.Unmarshal(b, &body); err != nil || body.EID == "" {
			return "", errors.New("no eid")
		}
		return body.EID, nil
	}
	if err := r.ParseForm(); err != nil {
		return "", err
	}
	if v := r.PostForm.Get("eid"); v != "" {
		return v, nil
	}
	return "", errors.New("no eid")
}

func logout(w http.ResponseWriter, _ *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: PathPrefix, MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}

func writeProto(w http.ResponseWriter, m proto.Message) {
	b, err := protojson.MarshalOptions{EmitUnpopulated: false}.Marshal(m)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encoding failed")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

//go:embed page.html
var pageHTML []byte

func (s *Service) page(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(pageHTML)
}
