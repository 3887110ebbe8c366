package dispatch

import "github.com/retryhub/retryhub/server/internal/retry"

// Jobs exposes how claims loaded together are split into calls.
func (d *Dispatcher) Jobs(batch []*retry.Claim) [][]*retry.Claim { return d.jobs(batch) }

// RunTogether runs claims as one job of a worker would: held, their arguments read, then sent
// together (runBatch), each settled. It lets a test make a batched call without depending on
// which claims the loader finds ready at once.
func (d *Dispatcher) RunTogether(claims []retry.Claim) {
	var job []*retry.Claim
	for i := range claims {
		c := &claims[i]
		if d.take(c) {
			job = append(job, c)
		}
	}
	d.mu.Lock()
	for _, c := range job {
		d.waiting[c] = struct{}{}
	}
	d.mu.Unlock()
	job = d.loadArgs(job)
	for _, c := range job {
		d.startedOn(c)
	}
	d.runBatch(job)
	for _, c := range job {
		d.done(c)
	}
}
