// Package quota counts the predicate queries about one citizen by one
// consumer under one access rule, so that a yes/no question cannot be asked
// often enough to become a look-up.
//
// Invariant: a key is allowed at most Count times in any window of Period
// (a sliding log of the allowed times, not fixed buckets). The counts are
// in memory, per gateway replica: with n replicas a consumer gets at most
// n×Count answers per Period, and a restart forgets them. Both are
// documented limits, acceptable because a predicate's parameters are fixed
// by the rule, so repeating it yields the same answer.
package quota

import (
	"sync"
	"time"
)

// DefaultMaxKeys bounds the keys remembered at once.
const DefaultMaxKeys = 1 << 20

// Limiter remembers recent allowed times per key. The zero value is not
// usable; create with New.
type Limiter struct {
	mu      sync.Mutex
	keys    map[string]*entry
	maxKeys int
}

type entry struct {
	times  []time.Time // allowed events still inside the window, oldest first
	period time.Duration
}

// New returns a limiter that remembers at most maxKeys keys (0: the default).
func New(maxKeys int) *Limiter {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	return &Limiter{keys: map[string]*entry{}, maxKeys: maxKeys}
}

// Allow reports whether one more event for key at now stays within count
// per period, and records it if so. When the limiter is full of keys that
// are all still in their window it refuses (fails closed) rather than
// forgetting a count.
func (l *Limiter) Allow(key string, count int, period time.Duration, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, known := l.keys[key]
	if !known {
		if len(l.keys) >= l.maxKeys {
			l.sweep(now)
			if len(l.keys) >= l.maxKeys {
				return false
			}
		}
		e = &entry{}
		l.keys[key] = e
	}
	e.period = max(e.period, period)
	e.times = live(e.times, now.Add(-period))
	if len(e.times) >= count {
		return false
	}
	e.times = append(e.times, now)
	return true
}

// live drops the times at or before since (times are in increasing order).
func live(times []time.Time, since time.Time) []time.Time {
	i := 0
	for i < len(times) && !times[i].After(since) {
		i++
	}
	return times[i:]
}

// sweep forgets every key whose last event has left its window.
func (l *Limiter) sweep(now time.Time) {
	for k, e := range l.keys {
		if len(e.times) == 0 || !e.times[len(e.times)-1].After(now.Add(-e.period)) {
			delete(l.keys, k)
		}
	}
}
