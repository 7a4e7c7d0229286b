// Package workers runs tasks on goroutines that wait a while for the next
// task once one ends, so that a server decides a message on a goroutine
// whose stack has already grown through the path (a fresh goroutine grows
// its stack anew, copying it, on every message).
//
// Handing a task over takes a short mutex and a send on the chosen
// worker's own channel. A pool whose idle workers all waited on one shared
// channel serialised every hand-over on that channel's lock: on 16 cores,
// with 512 queries in flight, it was most of the gateway's and the provider
// adapter's lock contention and capped the path's throughput.
package workers

import (
	"slices"
	"sync"
	"time"
)

// Pool runs each task given to Go on an idle worker, or on a new one when
// none is idle: a task never waits for a worker. A worker that has been
// idle for the pool's idle time ends.
type Pool[T any] struct {
	run  func(T)
	idle time.Duration

	mu     sync.Mutex
	free   []*worker[T] // idle workers; the most recently idle last
	closed bool
}

type worker[T any] struct {
	in chan task[T] // one at most: a worker is handed a task only when idle
}

type task[T any] struct {
	t    T
	stop bool
}

// New returns a pool that runs run for each task, with workers that end
// after idle without a task.
func New[T any](idle time.Duration, run func(T)) *Pool[T] {
	return &Pool[T]{run: run, idle: idle}
}

// Go runs t on the most recently idle worker, or on a new goroutine. It
// never blocks.
func (p *Pool[T]) Go(t T) {
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		w := p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		p.mu.Unlock()
		w.in <- task[T]{t: t}
		return
	}
	p.mu.Unlock()
	go p.work(t)
}

// Idle is the number of workers waiting for a task.
func (p *Pool[T]) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.free)
}

// Close ends the idle workers at once, and every other worker when its
// task is done. A task given after Close still runs, on a goroutine that
// then ends.
func (p *Pool[T]) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for i, w := range p.free {
		w.in <- task[T]{stop: true}
		p.free[i] = nil
	}
	p.free = nil
}

func (p *Pool[T]) work(t T) {
	w := &worker[T]{in: make(chan task[T], 1)}
	timer := time.NewTimer(p.idle)
	defer timer.Stop()
	for {
		p.run(t)
		var zero T
		t = zero // an idle worker holds nothing of the task it ran
		if !p.park(w) {
			return
		}
		timer.Reset(p.idle)
		var next task[T]
		select {
		case next = <-w.in:
		case <-timer.C:
			if p.unpark(w) {
				return
			}
			// Go took it off the idle list as the timer fired: its
			// task is on the way.
			next = <-w.in
		}
		if next.stop {
			return
		}
		t = next.t
	}
}

// park puts w on the idle list, unless the pool is closed.
func (p *Pool[T]) park(w *worker[T]) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.free = append(p.free, w)
	return true
}

// unpark takes w off the idle list, and reports whether it was on it. The
// workers idle longest are first, so the search is short.
func (p *Pool[T]) unpark(w *worker[T]) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, f := range p.free {
		if f == w {
			p.free = slices.Delete(p.free, i, i+1)
			return true
		}
	}
	return false
}
