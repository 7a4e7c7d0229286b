package index

import "time"

// SetOwnPendingMax sets how many of the gateway's own leaves ix holds
// handed over and not yet written (ownPendingMax).
func SetOwnPendingMax(ix *Index, n int) { ix.ownPendingMax = n }

// OwnPending is how many of the gateway's own leaves ix holds in memory.
func OwnPending(ix *Index) int {
	ix.pmu.Lock()
	defer ix.pmu.Unlock()
	ix.drainLocked()
	return ix.pendCount - ix.pendStream
}

// SetDeferMax sets how long ix's follower waits for the handover of an own
// batch it reached first (deferMax).
func SetDeferMax(ix *Index, d time.Duration) { ix.deferMax = d }

// Deferred is how many own batches ix's follower waits to be handed over,
// the handovers queued applied first.
func Deferred(ix *Index) int {
	ix.pmu.Lock()
	defer ix.pmu.Unlock()
	ix.drainLocked()
	n := 0
	for _, d := range ix.deferred {
		n += len(d)
	}
	return n
}
