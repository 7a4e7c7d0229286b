package quota

import (
	"testing"
	"time"
)

func TestAllowCountsPerKeyInASlidingWindow(t *testing.T) {
	t.Parallel()
	l := New(0)
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		key  string
		at   time.Duration
		want bool
	}{
		{"first", "a", 0, true},
		{"second", "a", time.Hour, true},
		{"third", "a", 2 * time.Hour, true},
		{"fourth within the day", "a", 3 * time.Hour, false},
		{"another key is counted apart", "b", 3 * time.Hour, true},
		{"a refusal is not counted, the window still holds three", "a", 23 * time.Hour, false},
		{"the first has left the window", "a", 24*time.Hour + time.Second, true},
		{"but the second has not", "a", 24*time.Hour + 2*time.Second, false},
	} {
		if got := l.Allow(tc.key, 3, 24*time.Hour, t0.Add(tc.at)); got != tc.want {
			t.Errorf("%s: Allow = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestFullLimiterForgetsOnlyExpiredKeysAndOtherwiseRefuses(t *testing.T) {
	t.Parallel()
	l := New(2)
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	if !l.Allow("a", 1, time.Hour, t0) || !l.Allow("b", 1, 48*time.Hour, t0) {
		t.Fatal("first events refused")
	}
	if l.Allow("c", 1, time.Hour, t0.Add(time.Minute)) {
		t.Fatal("a full limiter whose keys are all live must refuse a new key")
	}
	// Two hours on, a has left its one-hour window but b (48 h) has not.
	if !l.Allow("c", 1, time.Hour, t0.Add(2*time.Hour)) {
		t.Fatal("an expired key should have been forgotten to make room")
	}
	if l.Allow("b", 1, 48*time.Hour, t0.Add(2*time.Hour)) {
		t.Fatal("b was forgotten although it is still inside its own window")
	}
}
