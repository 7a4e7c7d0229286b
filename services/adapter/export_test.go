package adapter

import "time"

// SetWorkerIdle sets how long provider workers wait for a request, and
// returns the previous setting.
func SetWorkerIdle(d time.Duration) time.Duration {
	old := workerIdle
	workerIdle = d
	return old
}
