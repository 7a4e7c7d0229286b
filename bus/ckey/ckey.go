// Package ckey derives citizen keys: the only form in which a citizen's
// identity appears outside message payloads (subjects, audit records, logs,
// spans, metrics).
//
// Invariant: a ckey is HMAC-SHA-256 under the federation's secret key of the
// normalised eID, base32 without padding. Without the key, a ckey cannot be
// linked back to an eID by enumerating the (small) eID space.
package ckey

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// KeySize is the size of a federation citizen key in bytes.
const KeySize = 32

// Len is the length of a ckey in characters.
const Len = 52

var enc = base32.StdEncoding.WithPadding(base32.NoPadding)

// ErrBadKey is returned for a key file that is not a valid citizen key.
var ErrBadKey = errors.New("ckey: invalid citizen key")

// Keyer derives ckeys. It is safe for concurrent use.
type Keyer struct {
	pool sync.Pool
}

// New returns a Keyer for a federation key of at least KeySize bytes.
func New(key []byte) (*Keyer, error) {
	if len(key) < KeySize {
		return nil, fmt.Errorf("%w: %d bytes, need at least %d", ErrBadKey, len(key), KeySize)
	}
	k := append([]byte(nil), key...)
	return &Keyer{pool: sync.Pool{New: func() any { return &keying{h: hmac.New(sha256.New, k)} }}}, nil
}

// keying is one pooled HMAC with its buffers, so that a ckey costs one
// allocation (the string) on the query path.
type keying struct {
	h   hash.Hash
	in  [64]byte
	sum [sha256.Size]byte
	out [Len]byte
}

// CKey returns the citizen key of a normalised eID.
func (k *Keyer) CKey(eid string) string {
	s := k.pool.Get().(*keying)
	defer k.pool.Put(s)
	s.h.Reset()
	if len(eid) <= len(s.in) {
		s.h.Write(s.in[:copy(s.in[:], eid)])
	} else {
		s.h.Write([]byte(eid))
	}
	enc.Encode(s.out[:], s.h.Sum(s.sum[:0]))
	return string(s.out[:])
}

// Equal compares two ckeys in constant time.
func Equal(a, b string) bool {
	return hmac.Equal([]byte(a), []byte(b))
}

// Generate writes a new random key file (hex encoded, 0600) at path.
// It refuses to overwrite an existing file: replacing the key changes every
// citizen's ckey and cuts them off their audit history.
func Generate(path string) error {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "%x\n", key)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Load reads a key file written by Generate.
func Load(path string) (*Keyer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ckey: %w (run `jisr certs init` to create the federation's citizen key)", err)
	}
	var key []byte
	if _, err := fmt.Sscanf(strings.TrimSpace(string(data)), "%x", &key); err != nil {
		return nil, fmt.Errorf("%w: %s is not hex", ErrBadKey, path)
	}
	return New(key)
}
