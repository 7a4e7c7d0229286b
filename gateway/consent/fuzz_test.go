package consent

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The fuzz target's key and clock are fixed, so the committed seed corpus
// (testdata/fuzz/FuzzParseToken) stays valid: the seeds are signed with this
// key and their times are around fuzzNow.
var (
	fuzzKey = ed25519.NewKeyFromSeed([]byte("jisr-consent-fuzz-key-32-bytes!!"))
	fuzzNow = time.Unix(1_800_000_100, 0)
)

func fuzzKeys() *KeySet {
	pub := fuzzKey.Public().(ed25519.PublicKey)
	return &KeySet{keys: []*Key{{ID: kid(pub), Created: time.Unix(1_700_000_000, 0), Private: fuzzKey, Public: pub}}}
}

// fuzzSeeds are the seed corpus: a valid token and off-spec variants of it.
func fuzzSeeds() map[string]string {
	ks := fuzzKeys()
	k := ks.Signing()
	enc := base64.RawURLEncoding.EncodeToString
	signed := func(h, p string) string {
		in := enc([]byte(h)) + "." + enc([]byte(p))
		return in + "." + enc(ed25519.Sign(k.Private, []byte(in)))
	}
	hdr := `{"alg":"EdDSA","kid":"` + k.ID + `","typ":"JWT"}`
	body := `{"iss":"spiffe://jisr.internal/consent","sub":"CKEY","aud":"spiffe://jisr.internal/member/cnss",` +
		`"iat":1800000000,"nbf":1800000000,"exp":1800003600,"jti":"w7cpij6fowlcurdbsc7kdpkn","purpose":"amo-enrolment",` +
		`"legal_basis":"consent","authorization_details":[{"type":"jisr_query","service":"jisr.civilregistry.v1.CivilRegistry",` +
		`"methods":["GetPerson"],"fields":["person.names"]}],"max_uses":3}`
	with := func(old, new string) string { return strings.Replace(body, old, new, 1) }
	valid := signed(hdr, body)
	p := strings.Split(valid, ".")
	return map[string]string{
		"valid":              valid,
		"valid-go-jose":      must(Sign(k, &Claims{Issuer: "spiffe://jisr.internal/consent", Subject: "CKEY", Audience: "spiffe://jisr.internal/member/cnss", IssuedAt: 1_800_000_000, NotBefore: 1_800_000_000, Expiry: 1_800_003_600, ID: "w7cpij6fowlcurdbsc7kdpkn", Purpose: "amo-enrolment", LegalBasis: "consent", AuthorizationDetails: []Detail{{Type: DetailType, Service: "jisr.civilregistry.v1.CivilRegistry", Methods: []string{"GetPerson"}}}})),
		"padded":             valid + "==",
		"trailing-bits":      p[0] + "." + p[1] + "." + p[2][:len(p[2])-1] + "B",
		"b64-false":          signed(`{"alg":"EdDSA","b64":false,"crit":["b64"],"kid":"`+k.ID+`","typ":"JWT"}`, body),
		"jwk":                signed(`{"alg":"EdDSA","jwk":{"kty":"OKP","crv":"Ed25519","x":"AAAA"},"kid":"`+k.ID+`","typ":"JWT"}`, body),
		"alg-none":           enc([]byte(`{"alg":"none","kid":"`+k.ID+`","typ":"JWT"}`)) + "." + p[1] + ".",
		"dup-header":         signed(`{"alg":"EdDSA","alg":"EdDSA","kid":"`+k.ID+`","typ":"JWT"}`, body),
		"no-typ":             signed(`{"alg":"EdDSA","kid":"`+k.ID+`"}`, body),
		"aud-and-Aud":        signed(hdr, with(`"aud":"spiffe://jisr.internal/member/cnss"`, `"aud":"spiffe://jisr.internal/member/cnss","Aud":"spiffe://jisr.internal/member/tax"`)),
		"dup-aud":            signed(hdr, with(`"aud":"spiffe://jisr.internal/member/cnss"`, `"aud":"spiffe://jisr.internal/member/tax","aud":"spiffe://jisr.internal/member/cnss"`)),
		"dup-in-detail":      signed(hdr, with(`"methods":["GetPerson"]`, `"methods":["IsAlive"],"methods":["GetPerson"]`)),
		"jti-star":           signed(hdr, with(`"jti":"w7cpij6fowlcurdbsc7kdpkn"`, `"jti":"*"`)),
		"jti-path":           signed(hdr, with(`"jti":"w7cpij6fowlcurdbsc7kdpkn"`, `"jti":"../x"`)),
		"100-years":          signed(hdr, with(`"exp":1800003600`, `"exp":4955000000`)),
		"iat-ahead":          signed(hdr, with(`"iat":1800000000`, `"iat":1800009000`)),
		"nbf-after-exp":      signed(hdr, with(`"nbf":1800000000`, `"nbf":1800007200`)),
		"null-claim":         signed(hdr, with(`"max_uses":3`, `"max_uses":null`)),
		"trailing-data":      signed(hdr, body+" {}"),
		"whitespace":         p[0] + "." + p[1][:8] + " " + p[1][8:] + "." + p[2],
		"two-parts":          p[0] + "." + p[1],
		"json-serialisation": `{"protected":"` + p[0] + `","payload":"` + p[1] + `","signature":"` + p[2] + `"}`,
	}
}

func must(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}

// FuzzParseToken: no input makes parse panic, and whatever it accepts is in
// the one accepted form: canonical parts, exactly the header members
// alg=EdDSA, kid, typ=JWT, a valid signature, a jti of the grammar and a
// bounded validity period.
func FuzzParseToken(f *testing.F) {
	for _, name := range slices.Sorted(maps.Keys(fuzzSeeds())) {
		f.Add(fuzzSeeds()[name])
	}
	ks := fuzzKeys()
	f.Fuzz(func(t *testing.T, token string) {
		c, err := parse(ks, token, fuzzNow)
		if err != nil {
			if c != nil {
				t.Fatal("claims returned with an error")
			}
			return
		}
		parts := strings.Split(token, ".")
		if len(parts) != 3 {
			t.Fatalf("accepted %d parts", len(parts))
		}
		for _, p := range parts {
			b, err := base64.RawURLEncoding.DecodeString(p)
			if err != nil || base64.RawURLEncoding.EncodeToString(b) != p {
				t.Fatalf("accepted a non-canonical part %q", p)
			}
		}
		h, _ := base64.RawURLEncoding.DecodeString(parts[0])
		var header map[string]any
		if err := json.Unmarshal(h, &header); err != nil || len(header) != 3 || header["alg"] != "EdDSA" || header["typ"] != "JWT" || header["kid"] != ks.Signing().ID {
			t.Fatalf("accepted header %s", h)
		}
		sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
		if !ed25519.Verify(ks.Signing().Public, []byte(parts[0]+"."+parts[1]), sig) {
			t.Fatal("accepted a bad signature")
		}
		if !CheckID(c.ID) || c.NotBefore > c.Expiry || c.Expiry-c.NotBefore > int64(MaxTTL/time.Second) || c.IssuedAt > fuzzNow.Add(MaxClockSkew).Unix() {
			t.Fatalf("accepted claims %+v", c)
		}
	})
}

// The committed seed corpus is the one fuzzSeeds builds, and the seeds read
// as they should: the valid ones accepted, every other one refused. Run with
// JISR_WRITE_FUZZ_CORPUS=1 to rewrite testdata/fuzz/FuzzParseToken.
func TestFuzzSeedCorpus(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("testdata", "fuzz", "FuzzParseToken")
	ks := fuzzKeys()
	for name, tok := range fuzzSeeds() {
		want := "go test fuzz v1\nstring(" + strconv.Quote(tok) + ")\n"
		file := filepath.Join(dir, name)
		if os.Getenv("JISR_WRITE_FUZZ_CORPUS") != "" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := os.ReadFile(file); err != nil || string(got) != want {
			t.Errorf("%s is missing or stale (JISR_WRITE_FUZZ_CORPUS=1 go test -run TestFuzzSeedCorpus ./consent/ rewrites it): %v", file, err)
		}
		_, err := parse(ks, tok, fuzzNow)
		if valid := strings.HasPrefix(name, "valid"); valid != (err == nil) {
			t.Errorf("seed %s: %v", name, err)
		}
	}
}
