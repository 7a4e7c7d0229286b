package accesslog

import (
	_ "embed"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

// Paths of the HTTP side.
const (
	PathPrefix = "/access-log/"
)

// GRPCPrefix is where the gRPC service is mounted on an HTTP mux (the server
// must speak HTTP/2; h2c in development).
var GRPCPrefix = "/" + auditv1.AccessLog_ServiceDesc.ServiceName + "/"

// Routes returns the HTTP handlers of the access log, keyed by mux pattern:
// the page and its static files, the JSON API and the gRPC service. Sign-in
// and sign-out are package citizen's routes.
func (s *Service) Routes() map[string]http.Handler {
	g := grpc.NewServer()
	s.Register(g)
	return map[string]http.Handler{
		"GET " + PathPrefix + "{$}":             http.HandlerFunc(s.page),
		"GET " + PathPrefix + "static/page.js":  static("text/javascript; charset=utf-8", pageJS),
		"GET " + PathPrefix + "static/page.css": static("text/css; charset=utf-8", pageCSS),
		"GET " + PathPrefix + "v1/accesses":     http.HandlerFunc(s.listHTTP),
		"GET " + PathPrefix + "v1/keys":         http.HandlerFunc(s.keysHTTP),
		"POST " + GRPCPrefix:                    g,
	}
}

func (s *Service) listHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	ck, err := s.authenticateRequest(r)
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

// RequestAuthenticator authenticates an HTTP request (session cookie or
// bearer, with the cross-origin checks): package citizen's Auth.
type RequestAuthenticator interface {
	AuthenticateRequest(r *http.Request) (ckey string, err error)
}

func (s *Service) authenticateRequest(r *http.Request) (string, error) {
	if ra, ok := s.cfg.Auth.(RequestAuthenticator); ok {
		return ra.AuthenticateRequest(r)
	}
	t, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return s.authenticate(r.Context(), strings.TrimSpace(t))
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

var (
	//go:embed page.html
	pageHTML []byte
	//go:embed page.js
	pageJS []byte
	//go:embed page.css
	pageCSS []byte
)

// pageCSP allows the page's own script and style files only: no inline
// code, no other origin, no framing.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

func (s *Service) page(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	_, _ = w.Write(pageHTML)
}

func static(contentType string, body []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", contentType)
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write(body)
	})
}
