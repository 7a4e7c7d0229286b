package bench

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// TestRunRejectsAnIncompleteConfig: a run missing what it requires stops
// before it starts a single process, and names the missing field.
func TestRunRejectsAnIncompleteConfig(t *testing.T) {
	clients := func(Env) Clients { return nil }
	full := Config{Exe: "/bin/jisr", Federation: "federation.yaml", Out: t.TempDir(), Clients: clients}
	for _, tc := range []struct {
		name string
		cfg  func(c *Config)
		opts []Option
	}{
		{"no binary", func(c *Config) { c.Exe = "" }, nil},
		{"no federation file", func(c *Config) { c.Federation = "" }, nil},
		{"no report directory", func(c *Config) { c.Out = "" }, nil},
		{"no clients", func(c *Config) { c.Clients = nil }, nil},
		{"no concurrency", func(*Config) {}, []Option{WithConcurrency()}},
		{"no safeguard named", func(*Config) {}, []Option{WithSafeguardsOnly()}},
		{"an unknown safeguard", func(*Config) {}, []Option{WithSafeguardsOnly("audit", "fairshare")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := full
			tc.cfg(&cfg)
			if err := Run(context.Background(), cfg, tc.opts...); !errors.Is(err, ErrConfig) {
				t.Fatalf("Run: %v, want ErrConfig", err)
			}
		})
	}
}

func TestScalingStepsAndAllocsPerQuery(t *testing.T) {
	for n, want := range map[int][]int{1: {1}, 2: {1, 2}, 6: {1, 2, 4, 6}, 16: {1, 2, 4, 8, 16}} {
		if got := ScalingSteps(n); !slices.Equal(got, want) {
			t.Errorf("ScalingSteps(%d) = %v, want %v", n, got, want)
		}
	}
	per, all := allocsPerQuery(map[string]uint64{"gw": 100, "nats": 50, "gone": 1}, map[string]uint64{"gw": 1100, "nats": 550, "new": 9}, 10)
	if all != 150 || per["gw"] != 100 || per["nats"] != 50 || len(per) != 2 {
		t.Fatalf("allocsPerQuery: %v %v", per, all)
	}
	if per, all := allocsPerQuery(nil, map[string]uint64{"gw": 1}, 10); per != nil || all != 0 {
		t.Fatalf("no first sample: %v %v", per, all)
	}
}

// TestPaidCost: a safeguard's cost is counted in the gateway replicas and
// NATS only, where its work is done; the adapters' and backend's
// differences are the run's noise and stay out.
func TestPaidCost(t *testing.T) {
	r := Result{
		CPUByProcess: map[string]float64{"gateway-gw-1": 59, "gateway-gw-2": 60, "nats": 50, "adapter-cnss": 48, "backend": 48},
		Control:      &Control{CPUByProcess: map[string]float64{"gateway-gw-1": 71, "gateway-gw-2": 64, "nats": 53, "adapter-cnss": 44, "backend": 43}},
	}
	if got, ok := paidCost(r); !ok || got != 12+4+3 {
		t.Fatalf("paidCost = %v, %v; want 19, true", got, ok)
	}
	if _, ok := paidCost(Result{Control: &Control{}}); ok {
		t.Fatal("paidCost without CPU by process: a figure")
	}
}

// TestPaceSkipsMissedSlots: a caller far behind the schedule skips the slots
// it missed instead of making them up in a burst, so that a paced load
// never offers more than its rate.
func TestPaceSkipsMissedSlots(t *testing.T) {
	var ws workers
	every := time.Millisecond
	start := time.Now().Add(-time.Second) // a second behind: about 1000 slots missed
	ws.pace(context.Background(), start, every)
	if k := ws.slot.Load(); k < 990 {
		t.Fatalf("after a second behind, the next slot is %d: the missed ones were not skipped", k)
	}
	ws = workers{}
	ws.pace(context.Background(), time.Now(), time.Hour) // the first slot is due at once
	if k := ws.slot.Load(); k != 1 {
		t.Fatalf("slot %d taken on schedule, want 1", k)
	}
	ws = workers{}
	ws.pace(context.Background(), time.Now().Add(-2*time.Second), time.Second) // 2 periods late: made up, not skipped
	if k := ws.slot.Load(); k != 1 {
		t.Fatalf("a slot 2 periods late was skipped (next slot %d, want 1)", k)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ws = workers{}
	ws.pace(ctx, time.Now().Add(time.Hour), time.Hour) // due in an hour: returns at once, ctx done
}

// TestKeptUp: a paced comparison counts only where both sides did at least
// 97 % of the offered rate.
func TestKeptUp(t *testing.T) {
	for _, c := range []struct {
		r    Result
		want bool
	}{
		{Result{QPS: 100}, true},
		{Result{Offered: 100, QPS: 99, Control: &Control{QPS: 98}}, true},
		{Result{Offered: 100, QPS: 99, Control: &Control{QPS: 90}}, false},
		{Result{Offered: 100, QPS: 80, Control: &Control{QPS: 100}}, false},
	} {
		if got := c.r.KeptUp(); got != c.want {
			t.Errorf("%+v: KeptUp = %v, want %v", c.r, got, c.want)
		}
	}
}
