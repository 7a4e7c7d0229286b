// Package tree holds the RFC 6962 Merkle tree arithmetic of jisr's audit
// logs: leaf hashing, compact ranges for appending, and proofs — consistency
// proofs built from two compact ranges (what a writer keeps in memory), and
// inclusion and consistency proofs from a Store of tree nodes (what the
// citizen's access log serves).
//
// Invariant: every hash here is computed with the RFC 6962 SHA-256 hasher of
// github.com/transparency-dev/merkle, and every proof this package returns
// has been checked against the roots it claims before it is returned.
package tree

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"sync"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// hasher is the RFC 6962 SHA-256 tree hasher.
var hasher = rfc6962.DefaultHasher

// factory makes compact ranges that hash with HashChildren.
var factory = &compact.RangeFactory{Hash: HashChildren}

// NewEmptyRange returns an empty compact range starting at begin, hashing
// with the RFC 6962 SHA-256 hasher.
func NewEmptyRange(begin uint64) *compact.Range { return factory.NewEmptyRange(begin) }

// HashChildren is the RFC 6962 hash of an interior node:
// SHA-256(0x01 || l || r), hasher.HashChildren's result with one allocation
// (the result) for two SHA-256 hashes.
func HashChildren(l, r []byte) []byte {
	if len(l) != sha256.Size || len(r) != sha256.Size {
		return hasher.HashChildren(l, r)
	}
	var b [1 + 2*sha256.Size]byte
	b[0] = rfc6962.RFC6962NodeHashPrefix
	copy(b[1:], l)
	copy(b[1+sha256.Size:], r)
	h := sha256.Sum256(b[:])
	return h[:]
}

// digests are reusable SHA-256 states for LeafHash.
var digests = sync.Pool{New: func() any { return sha256.New() }}

var leafPrefix = []byte{rfc6962.RFC6962LeafHashPrefix}

// ErrProof: a proof could not be built from what is known.
var ErrProof = errors.New("tree: cannot build proof")

// LeafHash is the RFC 6962 leaf hash of a record's stored bytes:
// SHA-256(0x00 || data).
// It is hasher.HashLeaf's result, with one allocation (the result).
func LeafHash(data []byte) []byte {
	d := digests.Get().(hash.Hash)
	d.Reset()
	d.Write(leafPrefix)
	d.Write(data)
	out := d.Sum(make([]byte, 0, sha256.Size))
	digests.Put(d)
	return out
}

// EmptyRoot is the root hash of the empty tree.
func EmptyRoot() []byte { return hasher.EmptyRoot() }

// Root returns the root hash of a compact range starting at 0.
func Root(r *compact.Range) ([]byte, error) {
	if r.Begin() != 0 {
		return nil, fmt.Errorf("tree: root of a range starting at %d", r.Begin())
	}
	if r.End() == 0 {
		return EmptyRoot(), nil
	}
	return r.GetRootHash(nil)
}

// NewRange rebuilds the compact range [0, size) from its hashes.
func NewRange(size uint64, hashes [][]byte) (*compact.Range, error) {
	return factory.NewRange(0, size, hashes)
}

// Clone copies a compact range.
func Clone(r *compact.Range) *compact.Range {
	hs := make([][]byte, len(r.Hashes()))
	copy(hs, r.Hashes())
	c, err := factory.NewRange(r.Begin(), r.End(), hs)
	if err != nil {
		panic(err) // cannot happen: the hashes come from a valid range
	}
	return c
}

// ConsistencyFromRanges builds the RFC 6962 consistency proof from tree size
// old.End() to old.End()+since.End()-since.Begin(), given the compact range
// old = [0, size1) and since = [size1, size2). Every node of such a proof is
// a node of one of the two ranges, so no other storage is needed. The proof
// is verified against both roots before it is returned.
func ConsistencyFromRanges(old, since *compact.Range) ([][]byte, error) {
	size1, size2 := old.End(), since.End()
	if old.Begin() != 0 || since.Begin() != size1 {
		return nil, fmt.Errorf("%w: ranges [%d,%d) and [%d,%d) do not meet", ErrProof, old.Begin(), size1, since.Begin(), size2)
	}
	nodes, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProof, err)
	}
	known := map[compact.NodeID][]byte{}
	for i, id := range compact.RangeNodes(0, size1, nil) {
		known[id] = old.Hashes()[i]
	}
	for i, id := range compact.RangeNodes(size1, size2, nil) {
		known[id] = since.Hashes()[i]
	}
	hashes := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		h, ok := known[id]
		if !ok {
			return nil, fmt.Errorf("%w: node (%d,%d) of the consistency proof %d→%d is in neither range", ErrProof, id.Level, id.Index, size1, size2)
		}
		hashes[i] = h
	}
	p, err := nodes.Rehash(hashes, hasher.HashChildren)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProof, err)
	}
	if size1 == 0 || size1 == size2 {
		return p, nil
	}
	root1, err := Root(old)
	if err != nil {
		return nil, err
	}
	all := Clone(old)
	if err := all.AppendRange(since, nil); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProof, err)
	}
	root2, err := Root(all)
	if err != nil {
		return nil, err
	}
	if err := proof.VerifyConsistency(hasher, size1, size2, p, root1, root2); err != nil {
		return nil, fmt.Errorf("%w: self-check: %v", ErrProof, err)
	}
	return p, nil
}

// VerifyConsistency checks an RFC 6962 consistency proof.
func VerifyConsistency(size1, size2 uint64, p [][]byte, root1, root2 []byte) error {
	return proof.VerifyConsistency(hasher, size1, size2, p, root1, root2)
}

// VerifyInclusion checks an RFC 6962 inclusion proof of a leaf hash.
func VerifyInclusion(index, size uint64, leafHash []byte, p [][]byte, root []byte) error {
	return proof.VerifyInclusion(hasher, index, size, leafHash, p, root)
}
