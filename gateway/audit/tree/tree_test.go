package tree

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
)

func leaf(i uint64) []byte { return LeafHash(fmt.Appendf(nil, "record %d", i)) }

// ranges returns the compact ranges [0,size1) and [size1,size2).
func ranges(t *testing.T, size1, size2 uint64) (*compact.Range, *compact.Range) {
	t.Helper()
	old := NewEmptyRange(0)
	since := NewEmptyRange(size1)
	for i := uint64(0); i < size2; i++ {
		r := old
		if i >= size1 {
			r = since
		}
		if err := r.Append(leaf(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	return old, since
}

func TestConsistencyFromRangesEverySizeUpTo70(t *testing.T) {
	t.Parallel()
	for size2 := uint64(0); size2 <= 70; size2++ {
		for size1 := uint64(0); size1 <= size2; size1++ {
			old, since := ranges(t, size1, size2)
			p, err := ConsistencyFromRanges(old, since)
			if err != nil {
				t.Fatalf("%d→%d: %v", size1, size2, err)
			}
			if size1 == 0 || size1 == size2 {
				if len(p) != 0 {
					t.Fatalf("%d→%d: want an empty proof, got %d hashes", size1, size2, len(p))
				}
				continue
			}
			root1, _ := Root(old)
			all, _ := ranges(t, size2, size2)
			root2, _ := Root(all)
			if err := VerifyConsistency(size1, size2, p, root1, root2); err != nil {
				t.Fatalf("%d→%d: %v", size1, size2, err)
			}
			// A proof for other roots must not verify.
			bad := bytes.Clone(root2)
			bad[0] ^= 1
			if VerifyConsistency(size1, size2, p, root1, bad) == nil {
				t.Fatalf("%d→%d: proof verified against a wrong root", size1, size2)
			}
		}
	}
}

func TestConsistencyFromRangesLarge(t *testing.T) {
	t.Parallel()
	for _, c := range [][2]uint64{{1000, 1001}, {1023, 1024}, {1024, 4097}, {65535, 100000}} {
		old, since := ranges(t, c[0], c[1])
		if _, err := ConsistencyFromRanges(old, since); err != nil {
			t.Fatalf("%d→%d: %v", c[0], c[1], err)
		}
	}
}

func TestConsistencyFromRangesRefusesRangesThatDoNotMeet(t *testing.T) {
	t.Parallel()
	old, _ := ranges(t, 5, 5)
	_, since := ranges(t, 6, 9)
	if _, err := ConsistencyFromRanges(old, since); err == nil {
		t.Fatal("built a proof from [0,5) and [6,9)")
	}
	shifted := NewEmptyRange(2)
	if _, err := ConsistencyFromRanges(shifted, NewEmptyRange(2)); err == nil {
		t.Fatal("built a proof from a range not starting at 0")
	}
}

func TestRootOfEmptyRangeIsEmptyRoot(t *testing.T) {
	t.Parallel()
	r, err := Root(NewEmptyRange(0))
	if err != nil || !bytes.Equal(r, EmptyRoot()) {
		t.Fatalf("root %x, %v", r, err)
	}
	// RFC 6962: the root of one leaf is its leaf hash.
	one := NewEmptyRange(0)
	_ = one.Append(leaf(0), nil)
	if r, _ := Root(one); !bytes.Equal(r, leaf(0)) {
		t.Fatal("root of a one-leaf tree is not its leaf hash")
	}
}

func TestNewRangeAndClone(t *testing.T) {
	t.Parallel()
	all, _ := ranges(t, 13, 13)
	again, err := NewRange(13, all.Hashes())
	if err != nil || !again.Equal(all) {
		t.Fatalf("rebuilt range differs: %v", err)
	}
	if _, err := NewRange(16, all.Hashes()); err == nil {
		t.Fatal("accepted hashes of the wrong count for the size")
	}
	c := Clone(all)
	_ = c.Append(leaf(13), nil)
	if all.End() != 13 {
		t.Fatal("Clone shares state with the original")
	}
}

// The hashes are RFC 6962's, as the library's hasher computes them.
func TestHashesAreTheLibrarysHashes(t *testing.T) {
	h := rfc6962.DefaultHasher
	for _, data := range [][]byte{nil, {}, []byte("a record"), make([]byte, 1000)} {
		if got, want := LeafHash(data), h.HashLeaf(data); !bytes.Equal(got, want) {
			t.Fatalf("LeafHash(%q) = %x, want %x", data, got, want)
		}
	}
	a, b := h.HashLeaf([]byte("a")), h.HashLeaf([]byte("b"))
	for _, c := range [][2][]byte{{a, b}, {b, a}, {a, []byte("short")}, {nil, nil}} {
		if got, want := HashChildren(c[0], c[1]), h.HashChildren(c[0], c[1]); !bytes.Equal(got, want) {
			t.Fatalf("HashChildren(%x, %x) = %x, want %x", c[0], c[1], got, want)
		}
	}
}
