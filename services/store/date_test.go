package store

import (
	"database/sql"
	"fmt"
	"testing"
)

// ParseDate reads what fmt.Sscanf("%d-%d-%d") read, without fmt for the
// stored YYYY-MM-DD form.
func TestParseDateMatchesSscanf(t *testing.T) {
	for _, s := range []string{"1984-03-09", "0001-01-01", "2026-12-31", "2024-1-5", "19840-3-09", "1984-0a-09", "+984-03-09", "1984-03-0", "", "x"} {
		var y, m, d int32
		fmt.Sscanf(s, "%d-%d-%d", &y, &m, &d)
		gy, gm, gd := ParseDate(sql.NullString{String: s, Valid: true})
		if gy != y || gm != m || gd != d {
			t.Errorf("%q: %d-%d-%d, want %d-%d-%d", s, gy, gm, gd, y, m, d)
		}
	}
	if y, m, d := ParseDate(sql.NullString{String: "1984-03-09"}); y != 0 || m != 0 || d != 0 {
		t.Error("a NULL date was read")
	}
}

func TestInt(t *testing.T) {
	for s, want := range map[string]int64{"0": 0, "7": 7, "-3": -3, "123456789012345678": 123456789012345678} {
		if n, ok := Int(s); !ok || n != want {
			t.Errorf("Int(%q) = %d, %v; want %d", s, n, ok, want)
		}
	}
	for _, s := range []string{"", "-", "1.5", " 1", "1e3", "x", "1234567890123456789"} {
		if n, ok := Int(s); ok {
			t.Errorf("Int(%q) = %d, accepted", s, n)
		}
	}
}
