package demodata

import (
	"testing"
)

func TestEIDsAreUniqueAndInvertible(t *testing.T) {
	t.Parallel()
	seen := make(map[string]struct{}, 2_000_000)
	for i := 0; i < 2_000_000; i++ {
		e := EID(DefaultSeed, i)
		if _, dup := seen[e]; dup {
			t.Fatalf("duplicate eID at %d", i)
		}
		seen[e] = struct{}{}
		if i%9973 == 0 {
			if j, ok := Index(DefaultSeed, e); !ok || j != i {
				t.Fatalf("Index(EID(%d)) = %d, %v", i, j, ok)
			}
		}
	}
	if _, ok := Index(DefaultSeed, "AA000000"); ok && EID(DefaultSeed, 0) != "AA000000" {
		// Either it is citizen 0's or not a citizen at all; both are fine.
	}
	for _, bad := range []string{"", "A1", "AB12345", "AB1234567", "ab12345x", "1B123456"} {
		if _, ok := Index(DefaultSeed, bad); ok {
			t.Errorf("Index(%q) accepted", bad)
		}
	}
	if EID(DefaultSeed, 1) == EID(2, 1) {
		t.Error("the seed does not change eIDs")
	}
}

func TestDeterministic(t *testing.T) {
	t.Parallel()
	for i := 0; i < 1000; i += 37 {
		a, b := Get(DefaultSeed, i), Get(DefaultSeed, i)
		if a.EID != b.EID || a.GivenArabic != b.GivenArabic || a.Incomes != b.Incomes || a.AMOScheme != b.AMOScheme {
			t.Fatalf("citizen %d differs between two generations", i)
		}
	}
}

func TestConsistencyAcrossMinistries(t *testing.T) {
	t.Parallel()
	var deceased, disabled, n int
	for b := 0; b < 5000; b++ {
		blk := Block(DefaultSeed, b)
		for k := range blk {
			c := &blk[k]
			n++
			if c.Deceased {
				deceased++
				if !c.Death.Before(today) && c.Death != today || c.Death.Before(c.Birth) {
					t.Fatalf("%d: death %v outside life %v..%v", c.Index, c.Death, c.Birth, today)
				}
				if c.AMOCovered || c.Work != NoWork || c.Incomes[NYears-1].Declared {
					t.Fatalf("%d: the dead still work, declare or are insured", c.Index)
				}
			}
			if c.Disability {
				disabled++
			}
			if c.GivenArabic == "" || c.FamilyArabic == "" || c.GivenLatin == "" {
				t.Fatalf("%d: missing names", c.Index)
			}
			if c.Members[0] != blk[0].Index && c.Relation != Head {
				t.Fatalf("%d: household without its head first", c.Index)
			}
			for _, m := range c.Members {
				if m/4 != b {
					t.Fatalf("%d: household member %d outside the block", c.Index, m)
				}
			}
			if c.Marital == Married && c.Alive() {
				// A married person's spouse is in the household and married to them (or dead, married).
				var spouse *Citizen
				for _, m := range c.Members {
					o := &blk[m%4]
					if o != c && (o.Relation == Head || o.Relation == Spouse) {
						spouse = o
					}
				}
				if spouse == nil || spouse.Marital != Married {
					t.Fatalf("%d: married without a married spouse", c.Index)
				}
			}
			if c.Marital == Widowed && c.Relation != Head && c.Relation != Spouse && len(c.Members) > 1 {
				t.Fatalf("%d: widowed child", c.Index)
			}
			if c.Relation == Child {
				head := &blk[0]
				if !head.Birth.Before(c.Birth) {
					t.Fatalf("%d: child older than parent", c.Index)
				}
			}
			if c.AMOScheme == AMOTadamon {
				var income int64
				for _, m := range c.Members {
					income += blk[m%4].Incomes[NYears-1].Total()
				}
				if income >= LowIncomeThreshold {
					t.Fatalf("%d: Tadamon with household income %d", c.Index, income)
				}
			}
		}
	}
	if r := float64(deceased) / float64(n); r < 0.03 || r > 0.10 {
		t.Errorf("deceased share %.3f", r)
	}
	if r := float64(disabled) / float64(n); r < 0.02 || r > 0.06 {
		t.Errorf("disability share %.3f", r)
	}
}

func TestShowcase(t *testing.T) {
	t.Parallel()
	ex := Showcase(DefaultSeed)
	if len(ex) < 4 {
		t.Fatalf("showcase %v", ex)
	}
	for _, e := range ex {
		i, ok := Index(DefaultSeed, e.EID)
		if !ok || i >= 10000 {
			t.Errorf("showcase citizen %s is not among the first 10,000 (index %d)", e.EID, i)
		}
	}
}

func BenchmarkBlock(b *testing.B) {
	for i := 0; b.Loop(); i++ {
		Block(DefaultSeed, i)
	}
}
