package bus_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jisr-bus/jisr/bus"
)

// Timeout reads every grpc-timeout unit, falls back to the default on
// anything else, and never exceeds the maximum.
func TestTimeoutReadsEveryUnit(t *testing.T) {
	const def = 7 * time.Second
	for v, want := range map[string]time.Duration{
		"2H": 2 * time.Hour, "3M": 3 * time.Minute, "4S": 4 * time.Second,
		"250m": 250 * time.Millisecond, "9u": 9 * time.Microsecond, "12n": 12 * time.Nanosecond,
		"": def, "5": def, "5x": def, "m": def, "-5m": def, "0m": def, "100000000m": def, "1.5S": def,
	} {
		h := nats.Header{}
		if v != "" {
			h.Set(bus.HeaderTimeout, v)
		}
		if got := bus.Timeout(h, def, 0); got != want {
			t.Errorf("%q: %v, want %v", v, got, want)
		}
	}
	h := nats.Header{bus.HeaderTimeout: {"2H"}}
	if got := bus.Timeout(h, def, time.Minute); got != time.Minute {
		t.Errorf("2H under a 1m maximum: %v", got)
	}
}
