package workers_test

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jisr-bus/jisr/bus/workers"
)

// Every task runs once, from many goroutines at once, and the workers are
// reused: with 8 callers that each wait for their task, as a server's
// requests do, a handful of goroutines run all the tasks.
func TestEveryTaskRunsOnceOnReusedWorkers(t *testing.T) {
	type call struct {
		i    int
		done chan struct{}
	}
	var (
		ran     atomic.Int64
		started sync.Map // the goroutines that ran a task
	)
	const callers, each = 8, 2000
	p := workers.New(time.Minute, func(c call) {
		ran.Add(1)
		started.Store(goid(), true)
		close(c.done)
	})
	defer p.Close()
	var wg sync.WaitGroup
	for s := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				c := call{i: s*each + i, done: make(chan struct{})}
				p.Go(c)
				<-c.done
			}
		}()
	}
	wg.Wait()
	if got := ran.Load(); got != callers*each {
		t.Fatalf("%d tasks ran, want %d", got, callers*each)
	}
	goroutines := 0
	started.Range(func(any, any) bool { goroutines++; return true })
	// A worker is back on the idle list a moment after it closes done, so
	// a caller can outpace it now and then and start another.
	if goroutines > 4*callers {
		t.Errorf("%d goroutines ran %d tasks of %d callers: the workers were not reused", goroutines, callers*each, callers)
	}
}

// A worker idle for the pool's idle time ends; Close ends the idle ones at
// once, and a task given after Close still runs.
func TestIdleWorkersEndAndCloseEndsTheRest(t *testing.T) {
	done := make(chan int, 16)
	p := workers.New(50*time.Millisecond, func(i int) { done <- i })
	p.Go(1)
	<-done
	waitFor(t, func() bool { return p.Idle() == 1 }, "the worker to be idle")
	waitFor(t, func() bool { return p.Idle() == 0 }, "the idle worker to end after its idle time")

	q := workers.New(time.Hour, func(i int) { done <- i })
	before := runtime.NumGoroutine()
	for i := range 4 {
		q.Go(i)
	}
	for range 4 {
		<-done
	}
	waitFor(t, func() bool { return q.Idle() > 0 }, "idle workers")
	q.Close()
	if q.Idle() != 0 {
		t.Fatalf("%d idle workers after Close", q.Idle())
	}
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before }, "the workers to end after Close")
	q.Go(7)
	if got := <-done; got != 7 {
		t.Fatalf("task after Close: got %d", got)
	}
}

// A worker never keeps the task it ran: an idle worker holds no payload.
func TestIdleWorkerHoldsNoTask(t *testing.T) {
	type payload struct{ eid [64]byte }
	collected := make(chan struct{})
	ran := make(chan struct{})
	p := workers.New(time.Hour, func(*payload) { ran <- struct{}{} })
	defer p.Close()
	pl := &payload{}
	runtime.AddCleanup(pl, func(struct{}) { close(collected) }, struct{}{})
	p.Go(pl)
	<-ran
	pl = nil
	waitFor(t, func() bool {
		runtime.GC()
		select {
		case <-collected:
			return true
		default:
			return false
		}
	}, "the task to be collected while its worker waits")
}

func waitFor(t *testing.T, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// goid is an identifier of the running goroutine, from its stack header.
func goid() string {
	buf := make([]byte, 32)
	buf = buf[:runtime.Stack(buf, false)]
	for i := len("goroutine "); i < len(buf); i++ {
		if buf[i] == ' ' {
			return string(buf[len("goroutine "):i])
		}
	}
	return string(buf)
}
