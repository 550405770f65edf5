package maintain

import (
	"context"
	"errors"
	"time"

	"github.com/massgov/bulk-user-import/shared/lifecycle"
)

// cleaner deletes the per-row data of jobs finished longer ago than the
// retention: each row's raw fields, email, FEIN and error, and the FINEOS
// web id plans of emails no remaining row names. It keeps each job's
// counts by state and failures by code. It deletes a thousand rows per
// transaction with a short pause between, so a big job never holds locks
// for long; runs at most once a minute; and stops as soon as the process
// stops leading (its context ends; the next leader goes on).
type cleaner struct {
	m       *Maintainer
	lastRun time.Time
}

const (
	pruneJobs  = 10 // jobs looked at per run
	pruneBatch = 1000
	prunePause = 20 * time.Millisecond
)

func (c *cleaner) name() string { return "cleaner" }

func (c *cleaner) run(ctx context.Context) error {
	m := c.m
	if m.Config.Retention <= 0 || m.now().Sub(c.lastRun) < cleanEvery {
		return nil
	}
	c.lastRun = m.now()
	ids, err := m.Jobs.PruneCandidates(ctx, m.Config.Retention, pruneJobs)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		n, err := m.Lifecycle.Prune(ctx, id, lifecycle.PruneOptions{Batch: pruneBatch, Pause: prunePause, Continue: func() bool { return ctx.Err() == nil }})
		m.Metrics.RowsPruned.Add(n)
		if n > 0 {
			m.Log.Info("maintainer: deleted the row data of a job finished longer ago than the retention; its counts are kept",
				"job", id, "rows_deleted", n, "retention", m.Config.Retention.String())
		}
		if err != nil {
			errs = append(errs, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}
