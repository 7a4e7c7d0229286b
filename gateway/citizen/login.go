package citizen

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"time"
)

// pendingLogin is a sign-in in progress: what the callback must find again.
// It travels in the browser's login cookie, sealed (AES-256-GCM with a key
// that never leaves this process), so that no anonymous request can fill
// server memory; the state in it must equal the callback's state.
type pendingLogin struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Expires  int64  `json:"e"`
	Next     string `json:"x,omitempty"` // a key of AfterLoginPages
}

var errSealed = errors.New("citizen: the login cookie does not open")

// sealer seals and opens login cookies.
type sealer struct{ aead cipher.AEAD }

func newSealer() (*sealer, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

const loginAAD = "jisr citizen login v1"

func (s *sealer) seal(p *pendingLogin) (string, error) {
	plain, err := json.Marshal(p)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, []byte(loginAAD))), nil
}

func (s *sealer) open(v string, now time.Time) (*pendingLogin, error) {
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(b) < s.aead.NonceSize() {
		return nil, errSealed
	}
	plain, err := s.aead.Open(nil, b[:s.aead.NonceSize()], b[s.aead.NonceSize():], []byte(loginAAD))
	if err != nil {
		return nil, errSealed
	}
	var p pendingLogin
	if err := json.Unmarshal(plain, &p); err != nil || !now.Before(time.Unix(p.Expires, 0)) {
		return nil, errSealed
	}
	return &p, nil
}
