// Package lifecycle owns what happens to a job as a whole once its rows are
// recorded: its completion (recorded once each time every row is final),
// its cancellation (by an operator, or when more rows fail than its limits
// allow) and its result files (claimed, written once per completion, a
// failed write retried with backoff).
//
// The maintainer drives it on every tick for every job; the operator
// commands (splitter, cancel, dlq purge) use it for their one job at once.
// Message handlers never call it: they record their row's outcome and
// return.
//
// Every transition is a claim that at most one caller wins: the completion
// locks the job's row and then checks for queued rows, as a replay locks
// it before it queues rows again, so a job is never completed with a row
// queued and never completed twice for the same rows; the result files
// are claimed with a conditional update and a lease.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/results"
)

// Defaults.
const (
	// DefaultClaimLease is how long a claim on a job's result files holds:
	// a writer that died is taken over after it.
	DefaultClaimLease = 5 * time.Minute
	// DefaultRetryBase and DefaultRetryMax space the retries of a failed
	// write: base, then doubling, up to max.
	DefaultRetryBase = 5 * time.Second
	DefaultRetryMax  = 10 * time.Minute
)

// bookkeepingTimeout bounds the write that records a claim's outcome,
// which must happen even while the process is stopping.
const bookkeepingTimeout = 5 * time.Second

// Lifecycle runs the job-wide transitions on the database of pool.
type Lifecycle struct {
	pool    *pgxpool.Pool
	results *results.Publisher
	log     *slog.Logger
	// ClaimLease, RetryBase and RetryMax: see the defaults.
	ClaimLease, RetryBase, RetryMax time.Duration
}

// New returns the lifecycle of the jobs on pool, writing result files with
// publisher.
func New(pool *pgxpool.Pool, publisher *results.Publisher, log *slog.Logger) *Lifecycle {
	return &Lifecycle{pool: pool, results: publisher, log: log,
		ClaimLease: DefaultClaimLease, RetryBase: DefaultRetryBase, RetryMax: DefaultRetryMax}
}

// Complete records the job's completion when it is fully recorded, not
// finished, and no row of it is queued. It returns the completion's number
// and true when this call recorded it; false when the job is not ready or
// is already complete.
func (l *Lifecycle) Complete(ctx context.Context, jobID string) (completion int, won bool, err error) {
	err = pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		var ready bool
		err := tx.QueryRow(ctx, `SELECT finished_at IS NULL AND recorded_at IS NOT NULL FROM bulk_import_job WHERE job_id = $1 FOR UPDATE`,
			jobID).Scan(&ready)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("job %s: %w", jobID, jobs.ErrJobNotFound)
		}
		if err != nil || !ready {
			return err
		}
		// A statement of its own, after the lock: it sees every row change
		// committed before the lock was granted.
		var queued bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM bulk_import_row WHERE job_id = $1 AND state = 'queued')`, jobID).Scan(&queued); err != nil || queued {
			return err
		}
		won = true
		return tx.QueryRow(ctx, `UPDATE bulk_import_job SET finished_at = now(), completion = completion + 1,
			results_error = NULL, results_failures = 0, results_retry_at = NULL, updated_at = now()
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
// that is fully recorded, not finished, and has no queued row: new jobs
// whose last rows just became final, and jobs reopened by a replay.
func (l *Lifecycle) CompleteReady(ctx context.Context, limit int) ([]Completion, error) {
	rows, err := l.pool.Query(ctx, `SELECT job_id FROM bulk_import_job j
		WHERE finished_at IS NULL AND recorded_at IS NOT NULL
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

// Cancel stops a job: every queued row becomes cancelled with the reason,
// and the job is marked so that it is not split or replayed again. Rows
// being registered at that moment finish (and count as succeeded if they
// do); nothing else of the job is started. It returns the rows cancelled.
func (l *Lifecycle) Cancel(ctx context.Context, jobID, reason string) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE bulk_import_job SET cancelled_at = coalesce(cancelled_at, now()),
			cancel_reason = coalesce(cancel_reason, $2), updated_at = now() WHERE job_id = $1`, jobID, reason)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("job %s: %w", jobID, jobs.ErrJobNotFound)
		}
		tag, err = tx.Exec(ctx, `UPDATE bulk_import_row SET state = 'cancelled', error_code = $2, error_message = $3,
			finished_at = now(), updated_at = now() WHERE job_id = $1 AND state = 'queued'`, jobID, jobs.CodeCancelled, "job cancelled: "+reason)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("cancel job %s: %w", jobID, err)
	}
	return n, nil
}

// Cancellation is a job cancelled by EnforceLimits.
type Cancellation struct {
	Job    string
	Reason string
	Rows   int64 // rows cancelled
}

// EnforceLimits cancels every running job whose failed rows exceed its
// limits (--max-failures, --max-failure-ratio after --min-sample finished
// rows).
func (l *Lifecycle) EnforceLimits(ctx context.Context) ([]Cancellation, error) {
	rows, err := l.pool.Query(ctx, `SELECT j.job_id, coalesce(j.max_failures, 0), coalesce(j.max_failure_ratio, 0), j.min_sample,
			count(*) FILTER (WHERE r.state = 'failed'), count(*)
		FROM bulk_import_job j JOIN bulk_import_row r ON r.job_id = j.job_id AND r.state IN ('succeeded', 'failed')
		WHERE j.cancelled_at IS NULL AND j.finished_at IS NULL AND (j.max_failures IS NOT NULL OR j.max_failure_ratio IS NOT NULL)
		GROUP BY j.job_id`)
	if err != nil {
		return nil, fmt.Errorf("check failure limits: %w", err)
	}
	type running struct {
		job              string
		limits           jobs.Limits
		failed, finished int64
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (running, error) {
		var j running
		return j, r.Scan(&j.job, &j.limits.MaxFailures, &j.limits.MaxFailureRatio, &j.limits.MinSample, &j.failed, &j.finished)
	})
	if err != nil {
		return nil, fmt.Errorf("check failure limits: %w", err)
	}
	var out []Cancellation
	var errs []error
	for _, j := range list {
		reason := Exceeded(j.limits, j.failed, j.finished)
		if reason == "" {
			continue
		}
		n, err := l.Cancel(ctx, j.job, reason)
		if err != nil {
			l.log.Error("failure limit exceeded but the job could not be cancelled", "job", j.job, "reason", reason, "err", err)
			errs = append(errs, err)
			continue
		}
		l.log.Warn("failure limit exceeded: job cancelled", "job", j.job, "reason", reason, "rows_cancelled", n)
		out = append(out, Cancellation{Job: j.job, Reason: reason, Rows: n})
	}
	return out, errors.Join(errs...)
}

// Exceeded returns why failed rows out of finished (succeeded or failed)
// ones exceed the limits, or "" when they do not.
func Exceeded(l jobs.Limits, failed, finished int64) string {
	switch {
	case l.MaxFailures > 0 && failed > int64(l.MaxFailures):
		return fmt.Sprintf("%d rows failed, more than the %d allowed (--max-failures)", failed, l.MaxFailures)
	case l.MaxFailureRatio > 0 && finished > 0 && finished >= int64(l.MinSample) && float64(failed)/float64(finished) > l.MaxFailureRatio:
		return fmt.Sprintf("%d of %d finished rows failed (%.0f%%), more than the %.0f%% allowed (--max-failure-ratio)",
			failed, finished, 100*float64(failed)/float64(finished), 100*l.MaxFailureRatio)
	}
	return ""
}

// Outcome of WriteResults.
type Outcome int

// Outcomes.
const (
	Nothing    Outcome = iota // no result files were due (or the claim is another's)
	Written                   // written
	NotWritten                // handled without writing: there is nowhere to write them
	Failed                    // the write failed; it is retried after a backoff
	Released                  // not written now (the process is stopping, or a replay reopened the job); the claim was released
)

// WriteResults claims the result files of one job that are due (jobID's,
// or any job's when jobID is empty), writes them and records the outcome.
// Files are due when the job's latest completion's files are not written,
// no live claim is held on them and, for any job, a failed write's backoff
// has passed. It returns the job handled and the outcome; the error is
// for the claim and its bookkeeping (a failed write is an outcome, logged
// here).
func (l *Lifecycle) WriteResults(ctx context.Context, jobID string) (string, Outcome, error) {
	var job string
	var completion, failures int
	err := l.pool.QueryRow(ctx, `UPDATE bulk_import_job SET results_claimed_at = now()
		WHERE job_id = (SELECT job_id FROM bulk_import_job
		                WHERE finished_at IS NOT NULL AND results_written < completion
		                  AND ($1 = '' OR job_id = $1)
		                  AND (results_claimed_at IS NULL OR results_claimed_at < now() - $2 * interval '1 second')
		                  AND ($1 <> '' OR results_retry_at IS NULL OR results_retry_at <= now())
		                ORDER BY finished_at LIMIT 1 FOR UPDATE SKIP LOCKED)
		RETURNING job_id, completion, results_failures`, jobID, l.ClaimLease.Seconds()).Scan(&job, &completion, &failures)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", Nothing, nil
	}
	if err != nil {
		return "", Nothing, fmt.Errorf("claim result files: %w", err)
	}
	log := l.log.With("job", job, "completion", completion)
	location, werr := l.results.Write(ctx, job)

	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
	defer cancel()
	var out Outcome
	switch {
	case werr == nil:
		out = Written
		_, err = l.pool.Exec(bctx, `UPDATE bulk_import_job SET results_written = greatest(results_written, $2), results_written_at = now(),
			results_location = $3, results_error = NULL, results_failures = 0, results_retry_at = NULL, results_claimed_at = NULL
			WHERE job_id = $1`, job, completion, location)
		log.Info("result files written", "location", location)
	case errors.Is(werr, results.ErrNoBucket):
		out = NotWritten
		_, err = l.pool.Exec(bctx, `UPDATE bulk_import_job SET results_written = greatest(results_written, $2), results_written_at = now(),
			results_location = NULL, results_error = $3, results_failures = 0, results_retry_at = NULL, results_claimed_at = NULL
			WHERE job_id = $1`, job, completion, werr.Error())
		log.Warn("result files not written: " + werr.Error() + "; `splitter report " + job + " --out DIR` writes them locally")
	case ctx.Err() != nil || errors.Is(werr, results.ErrQueuedAgain):
		out = Released
		_, err = l.pool.Exec(bctx, `UPDATE bulk_import_job SET results_claimed_at = NULL WHERE job_id = $1`, job)
		if ctx.Err() != nil {
			log.Info("stopping: result files not written; another worker's maintainer writes them", "err", werr)
		} else {
			log.Info("result files not written: a replay reopened the job; its next completion writes them")
		}
	default:
		out = Failed
		delay := min(l.RetryBase<<min(failures, 20), l.RetryMax)
		_, err = l.pool.Exec(bctx, `UPDATE bulk_import_job SET results_error = $2, results_failures = results_failures + 1,
			results_retry_at = now() + $3 * interval '1 second', results_claimed_at = NULL WHERE job_id = $1`,
			job, werr.Error(), delay.Seconds())
		log.Error("could not write the result files; will retry", "err", werr, "failures", failures+1, "retry_in", delay.String())
	}
	if err != nil {
		return job, out, fmt.Errorf("record the result files of job %s: %w", job, err)
	}
	return job, out, nil
}

// Finish completes one job now if it is ready and writes its result files
// if they are due: what a command that ended a job (a splitter run whose
// rows were all final once recorded, a cancel, a purge) does so that the
// job does not wait for a maintainer's tick. Problems are logged; the
// maintainer finishes whatever this leaves.
func (l *Lifecycle) Finish(ctx context.Context, jobID string) {
	if _, won, err := l.Complete(ctx, jobID); err != nil {
		l.log.Warn("could not record the job's completion; a worker's maintainer will", "job", jobID, "err", err)
		return
	} else if won {
		l.log.Info("job complete: every row is final", "job", jobID)
	}
	if _, _, err := l.WriteResults(ctx, jobID); err != nil {
		l.log.Warn("could not write the job's result files; a worker's maintainer retries", "job", jobID, "err", err)
	}
}
