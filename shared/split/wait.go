package split

import (
	"context"
	"time"

	"github.com/massgov/bulk-user-import/shared/jobs"
)

// Wait polls the job's status every interval until the job is done (every
// row final and its completion recorded) and its result files are handled
// (written, not to be written, or a failed write recorded), calling tick
// with each status read, and returns the last status.
func Wait(ctx context.Context, store *jobs.Store, job string, interval time.Duration, tick func(jobs.Status)) (jobs.Status, error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		st, err := store.Status(ctx, job)
		if err != nil {
			return st, err
		}
		if tick != nil {
			tick(st)
		}
		if st.Done && st.Results != jobs.ResultsPending {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-t.C:
		}
	}
}
