package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// mallocs reads how many heap objects each process has allocated so far
// (runtime.MemStats.Mallocs, from the "# Mallocs = " line of its
// /debug/pprof/heap?debug=1); processes without a pprof address, or that
// do not answer within a second, are left out.
func (b *harness) mallocs(procs []*proc) map[string]uint64 {
	out := map[string]uint64{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range procs {
		addr, ok := b.pprof[p.name]
		if !ok {
			continue
		}
		wg.Go(func() {
			n, err := fetchMallocs(addr)
			if err != nil {
				return
			}
			mu.Lock()
			out[p.name] = n
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func fetchMallocs(addr string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/debug/pprof/heap?debug=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# Mallocs = "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no Mallocs line", addr)
}

// allocsPerQuery turns two samples of mallocs into heap allocations per
// query, per process and in all (0 in all when no process answered both).
func allocsPerQuery(m0, m1 map[string]uint64, queries int64) (map[string]float64, float64) {
	if queries <= 0 {
		return nil, 0
	}
	per := map[string]float64{}
	var sum float64
	for name, a := range m1 {
		z, ok := m0[name]
		if !ok || a < z {
			continue
		}
		per[name] = float64(a-z) / float64(queries)
		sum += per[name]
	}
	if len(per) == 0 {
		return nil, 0
	}
	return per, sum
}
