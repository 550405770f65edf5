package lifecycle

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/mask"
)

// Complete records the job's completion when it is fully recorded (or
// cancelled: a cancelled job takes no more sources), not finished, no run
// of it is in progress (a splitter run holds the job's run lock while it
// may still add rows, jobs.Store.Lock), and no row of it is queued. It
// returns the completion's number and true when this call recorded it;
// false when the job is not ready or is already complete.
func (l *Lifecycle) Complete(ctx context.Context, jobID string) (completion int, won bool, err error) {
	err = l.transition(ctx, jobID, func(tx pgx.Tx, s state) error {
		if s.finished || !s.recorded && !s.cancelled {
			return nil
		}
		// A run that took the run lock before this transaction locked the
		// job shows here; one that takes it later waits for this one to
		// end before it changes anything (it locks the job first).
		if held, err := l.jobs.RunHeld(ctx, tx, jobID); err != nil || held {
			return err
		}
		// A statement of its own, after the lock: it sees every row outcome
		// committed before the lock was granted, and none can commit until
		// this transaction ends.
		var queued bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM bulk_import_row WHERE job_id = $1 AND state = 'queued')`, jobID).Scan(&queued); err != nil || queued {
			return err
		}
		won = true
		return tx.QueryRow(ctx, `UPDATE bulk_import_job SET finished_at = now(), completion = completion + 1,
			results_error = NULL, results_failures = 0, results_retry_at = NULL,
			event_error = NULL, event_failures = 0, event_retry_at = NULL, updated_at = now()
			WHERE job_id = $1 RETURNING completion`, jobID).Scan(&completion)
	})
	if err != nil {
		return 0, false, fmt.Errorf("complete job %s: %w", jobID, err)
	}
	return completion, won, nil
}

// Completion is a job's completion recorded by CompleteReady.
type Completion struct {
	Job        string
	Completion int
}

// CompleteReady records the completion of every job (up to limit per call)
// that is fully recorded (or cancelled), not finished, not being run, and
// has no queued row: new jobs whose last rows just became final, jobs
// reopened by a replay, cancelled jobs.
func (l *Lifecycle) CompleteReady(ctx context.Context, limit int) ([]Completion, error) {
	rows, err := l.pool.Query(ctx, `SELECT job_id FROM bulk_import_job j
		WHERE finished_at IS NULL AND (recorded_at IS NOT NULL OR cancelled_at IS NOT NULL)
		  AND NOT EXISTS (SELECT 1 FROM bulk_import_row r WHERE r.job_id = j.job_id AND r.state = 'queued')
		ORDER BY created_at LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("find jobs to complete: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("find jobs to complete: %w", err)
	}
	var done []Completion
	var errs []error
	for _, id := range ids {
		n, won, err := l.Complete(ctx, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if won {
			l.log.Info("job complete: every row is final", "job", id, "completion", n)
			done = append(done, Completion{Job: id, Completion: n})
		}
	}
	return done, errors.Join(errs...)
}

// Finish completes one job now if it is ready and writes its result files
// if they are due: what a command that ended a job (a splitter run whose
// rows were all final once recorded, a cancel, a purge) does so that the
// job does not wait for a maintainer's tick. Problems are logged; the
// maintainer finishes whatever this leaves.
func (l *Lifecycle) Finish(ctx context.Context, jobID string) {
	if n, won, err := l.Complete(ctx, jobID); err != nil {
		l.log.Warn("could not record the job's completion; a worker's maintainer will", "job", jobID, "err", err)
		return
	} else if won {
		l.log.Info("job complete: every row is final", "job", jobID, "completion", n)
	}
	if _, _, err := l.WriteResults(ctx, jobID); err != nil {
		l.log.Warn("could not write the job's result files; a worker's maintainer retries", "job", jobID, "err", err)
	}
}

// Cancel stops a job that is not finished: every queued row becomes
// cancelled with the reason (masked: it is shown to operators), and the
// job is marked so that it is not split or replayed again. Rows being
// registered at that moment finish (and count as succeeded if they do);
// nothing else of the job is started. It returns the rows cancelled; a job
// whose completion is recorded is not cancelled (ErrFinished), nor is one
// cancelled already (its first reason stays; 0 rows).
func (l *Lifecycle) Cancel(ctx context.Context, jobID, reason string) (int64, error) {
	var n int64
	err := l.transition(ctx, jobID, func(tx pgx.Tx, s state) error {
		var err error
		n, err = cancel(ctx, tx, jobID, s, reason)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("cancel job %s: %w", jobID, err)
	}
	return n, nil
}

// cancel cancels the job locked in tx, in state s.
func cancel(ctx context.Context, tx pgx.Tx, jobID string, s state, reason string) (int64, error) {
	switch {
	case s.finished:
		return 0, ErrFinished
	case s.cancelled:
		return 0, nil
	}
	reason = mask.Text(reason)
	if _, err := tx.Exec(ctx, `UPDATE bulk_import_job SET cancelled_at = now(), cancel_reason = $2, updated_at = now() WHERE job_id = $1`,
		jobID, reason); err != nil {
		return 0, err
	}
	tag, err := tx.Exec(ctx, `UPDATE bulk_import_row SET state = 'cancelled', error_code = $2, error_message = $3,
		finished_at = now(), updated_at = now() WHERE job_id = $1 AND state = 'queued'`, jobID, jobs.CodeCancelled, "job cancelled: "+reason)
	return tag.RowsAffected(), err
}

// Cancellation is a job cancelled by EnforceLimits.
type Cancellation struct {
	Job    string
	Reason string
	Rows   int64 // rows cancelled
}

// EnforceLimits cancels every running job whose failed rows exceed its
// limits (--max-failures, --max-failure-ratio after --min-sample finished
// rows). The jobs over their limits are found without locks; each is then
// counted again, and cancelled, under its lock: a job that finished
// meanwhile is left alone.
func (l *Lifecycle) EnforceLimits(ctx context.Context) ([]Cancellation, error) {
	rows, err := l.pool.Query(ctx, `SELECT j.job_id, coalesce(j.max_failures, 0), coalesce(j.max_failure_ratio, 0), j.min_sample,
			count(*) FILTER (WHERE r.state = 'failed'), count(*)
		FROM bulk_import_job j JOIN bulk_import_row r ON r.job_id = j.job_id AND r.state IN ('succeeded', 'failed')
		WHERE j.cancelled_at IS NULL AND j.finished_at IS NULL AND (j.max_failures IS NOT NULL OR j.max_failure_ratio IS NOT NULL)
		GROUP BY j.job_id ORDER BY j.job_id`)
	if err != nil {
		return nil, fmt.Errorf("check failure limits: %w", err)
	}
	var over []string
	var id string
	var limits jobs.Limits
	var failed, finished int64
	if _, err := pgx.ForEachRow(rows, []any{&id, &limits.MaxFailures, &limits.MaxFailureRatio, &limits.MinSample, &failed, &finished}, func() error {
		if exceeded(limits, failed, finished) != "" {
			over = append(over, id)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("check failure limits: %w", err)
	}
	var out []Cancellation
	var errs []error
	for _, id := range over {
		c, err := l.enforce(ctx, id)
		switch {
		case err != nil:
			l.log.Error("failure limit exceeded but the job could not be cancelled", "job", id, "err", err)
			errs = append(errs, err)
		case c != nil:
			l.log.Warn("failure limit exceeded: job cancelled", "job", id, "reason", c.Reason, "rows_cancelled", c.Rows)
			out = append(out, *c)
		}
	}
	return out, errors.Join(errs...)
}

// enforce cancels one job if, under its lock, it runs and exceeds its
// limits.
func (l *Lifecycle) enforce(ctx context.Context, jobID string) (*Cancellation, error) {
	var c *Cancellation
	err := l.transition(ctx, jobID, func(tx pgx.Tx, s state) error {
		if s.finished || s.cancelled {
			return nil
		}
		var limits jobs.Limits
		var failed, finished int64
		if err := tx.QueryRow(ctx, `SELECT coalesce(max_failures, 0), coalesce(max_failure_ratio, 0), min_sample,
				(SELECT count(*) FILTER (WHERE state = 'failed') FROM bulk_import_row WHERE job_id = $1 AND state IN ('succeeded', 'failed')),
				(SELECT count(*) FROM bulk_import_row WHERE job_id = $1 AND state IN ('succeeded', 'failed'))
			FROM bulk_import_job WHERE job_id = $1`, jobID).
			Scan(&limits.MaxFailures, &limits.MaxFailureRatio, &limits.MinSample, &failed, &finished); err != nil {
			return err
		}
		reason := exceeded(limits, failed, finished)
		if reason == "" {
			return nil
		}
		n, err := cancel(ctx, tx, jobID, s, reason)
		c = &Cancellation{Job: jobID, Reason: reason, Rows: n}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("enforce the failure limits of job %s: %w", jobID, err)
	}
	return c, nil
}

// exceeded returns why failed rows out of finished (succeeded or failed)
// ones exceed the limits, or "" when they do not.
func exceeded(l jobs.Limits, failed, finished int64) string {
	switch {
	case l.MaxFailures > 0 && failed > int64(l.MaxFailures):
		return fmt.Sprintf("%d rows failed, more than the %d allowed (--max-failures)", failed, l.MaxFailures)
	case l.MaxFailureRatio > 0 && finished > 0 && finished >= int64(l.MinSample) && float64(failed)/float64(finished) > l.MaxFailureRatio:
		return fmt.Sprintf("%d of %d finished rows failed (%.0f%%), more than the %.0f%% allowed (--max-failure-ratio)",
			failed, finished, 100*float64(failed)/float64(finished), 100*l.MaxFailureRatio)
	}
	return ""
}
