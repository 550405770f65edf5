package maintain

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/massgov/bulk-user-import/shared/jobs"
)

// rescuer re-sends the messages of queued rows whose message must be gone:
// the import queue was purged, a message outlived the queue's retention,
// or a message SQS moved to the dead-letter queue expired there.
//
// A live message shows itself: every receive records an attempt on its
// row. Once no message is waiting in the import queue (none visible or
// delayed), a live message is either being handled or waiting out a retry
// delay, and is received again within RecoverAfter (consume.SilenceBound:
// twice the message timeout, one for a free handler and one for the work,
// plus the longer of the visibility timeout and the longest retry delay,
// plus a minute). So a row is presumed lost when the queue has had no
// message waiting for RecoverAfter and the row has shown no sign of life
// for RecoverAfter. A row with MaxReceiveCount attempts or more had its
// message moved to the dead-letter queue by SQS (its worker died on every
// attempt); it waits there to be replayed or purged, so it is recovered
// only once the dead-letter queue's retention has passed too.
//
// While the queue has a backlog nothing is presumed lost: a message may
// simply wait its turn. A duplicate, should a guess be wrong, is absorbed
// by the idempotent registration.
type rescuer struct {
	m          *Maintainer
	emptySince time.Time // since when no message was seen waiting
	lastRun    time.Time
	term       int // the elector's term of the last run
}

func (r *rescuer) name() string { return "rescuer" }

func (r *rescuer) run(ctx context.Context) error {
	m := r.m
	now := m.now()
	if term := m.Elector.Term(); term != r.term || now.Sub(r.lastRun) > max(3*m.Config.Interval, time.Minute) {
		// This process was not leader meanwhile, or stalled: what happened
		// to the queue in between is unknown.
		r.emptySince, r.term = time.Time{}, term
	}
	r.lastRun = now
	d, err := m.Queue.Depth(ctx)
	if err != nil {
		r.emptySince = time.Time{}
		return err
	}
	if d.Waiting() > 0 {
		r.emptySince = time.Time{}
		return nil
	}
	if r.emptySince.IsZero() {
		r.emptySince = now
	}
	if now.Sub(r.emptySince) < m.Config.RecoverAfter {
		return nil
	}
	sel := jobs.Selection{IdleFor: m.Config.RecoverAfter, MaxAttempts: m.Config.MaxReceiveCount,
		RedrivenIdleFor: m.Config.DLQRetention + m.Config.RecoverAfter}
	lost, err := m.Jobs.JobsToResend(ctx, sel)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range slices.Sorted(maps.Keys(lost)) {
		if ctx.Err() != nil {
			break
		}
		job, err := m.Jobs.Job(ctx, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n, err := m.Enqueuer.Resend(ctx, job, sel, false)
		m.Metrics.RowsResent.Add(n)
		if n > 0 {
			m.Log.Warn("maintainer: re-sent the messages of queued rows presumed lost (no sign of life, and no message waiting in the import queue, for recover-after)",
				"job", id, "rows_resent", n, "recover_after", m.Config.RecoverAfter.String())
		}
		switch {
		case errors.Is(err, jobs.ErrJobBusy):
			m.Log.Info("maintainer: the job's rows are being sent by another process; trying at the next tick", "job", id)
		case err != nil:
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
