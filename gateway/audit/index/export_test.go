package index

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
