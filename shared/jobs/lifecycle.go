package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Complete notes that the job may have become complete: when every row of
// a fully recorded job is final, it marks the job finished and returns the
// new completion number with won set. Exactly one caller wins each
// completion, however many finish the last rows together: the update
// serialises on the job's row and re-checks finished_at. Call it after the
// row's own change is committed.
func (s *Store) Complete(ctx context.Context, jobID string) (completion int, won bool, err error) {
	err = s.pool.QueryRow(ctx, `UPDATE bulk_import_job
		SET finished_at = now(), completion = completion + 1, results_claimed_at = now(), updated_at = now()
		WHERE job_id = $1 AND finished_at IS NULL AND recorded_at IS NOT NULL
		  AND NOT EXISTS (SELECT 1 FROM bulk_import_row WHERE job_id = $1 AND state = 'queued')
		RETURNING completion`, jobID).Scan(&completion)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("complete job %s: %w", jobID, err)
	}
	return completion, true, nil
}

// ClaimUnwrittenResults claims a finished job whose result files are not
// written and whose last claim is older than stale (its writer died), so
// that one process writes them. ok is false when there is none.
func (s *Store) ClaimUnwrittenResults(ctx context.Context, stale time.Duration) (jobID string, completion int, ok bool, err error) {
	err = s.pool.QueryRow(ctx, `UPDATE bulk_import_job SET results_claimed_at = now()
		WHERE job_id = (SELECT job_id FROM bulk_import_job
		                WHERE finished_at IS NOT NULL AND results_written < completion
		                  AND (results_claimed_at IS NULL OR results_claimed_at < now() - $1::interval)
		                ORDER BY finished_at LIMIT 1 FOR UPDATE SKIP LOCKED)
		RETURNING job_id, completion`, stale.String()).Scan(&jobID, &completion)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", 0, false, nil
	}
	if err != nil {
		return "", 0, false, fmt.Errorf("claim unwritten results: %w", err)
	}
	return jobID, completion, true, nil
}

// ResultsWritten records that the files of a completion are written, or,
// with a non-nil writeErr, why they are not.
func (s *Store) ResultsWritten(ctx context.Context, jobID string, completion int, writeErr error) error {
	var err error
	if writeErr == nil {
		_, err = s.pool.Exec(ctx, `UPDATE bulk_import_job SET results_written = greatest(results_written, $2), results_error = NULL
			WHERE job_id = $1`, jobID, completion)
	} else {
		_, err = s.pool.Exec(ctx, `UPDATE bulk_import_job SET results_error = $2 WHERE job_id = $1`, jobID, writeErr.Error())
	}
	if err != nil {
		return fmt.Errorf("record results of job %s: %w", jobID, err)
	}
	return nil
}

// Cancel stops a job: every queued row becomes cancelled with the reason,
// and the job is marked so that it is not split or replayed again. Rows
// being registered at that moment finish (and count as succeeded if they
// do); nothing else of the job is started. It returns the rows cancelled.
func (s *Store) Cancel(ctx context.Context, jobID, reason string) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE bulk_import_job SET cancelled_at = coalesce(cancelled_at, now()),
			cancel_reason = coalesce(cancel_reason, $2), updated_at = now() WHERE job_id = $1`, jobID, reason)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("job %s: %w", jobID, ErrJobNotFound)
		}
		tag, err = tx.Exec(ctx, `UPDATE bulk_import_row SET state = 'cancelled', error_code = $2, error_message = $3,
			finished_at = now(), updated_at = now() WHERE job_id = $1 AND state = 'queued'`, jobID, CodeCancelled, "job cancelled: "+reason)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("cancel job %s: %w", jobID, err)
	}
	return n, nil
}

// FailureLimitExceeded checks the job's limits against its finished rows
// and returns a reason when they are exceeded ("" when not, or when the
// job has no limits or too few finished rows).
func (s *Store) FailureLimitExceeded(ctx context.Context, jobID string) (string, error) {
	job, err := s.Job(ctx, jobID)
	if err != nil {
		return "", fmt.Errorf("limits: %w", err)
	}
	l := job.Limits
	if job.CancelledAt != nil || (l.MaxFailures == 0 && l.MaxFailureRatio == 0) {
		return "", nil
	}
	var failed, finished int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'failed'), count(*)
		FROM bulk_import_row WHERE job_id = $1 AND state IN ('succeeded', 'failed')`, jobID).Scan(&failed, &finished); err != nil {
		return "", fmt.Errorf("failures of job %s: %w", jobID, err)
	}
	switch {
	case l.MaxFailures > 0 && failed > int64(l.MaxFailures):
		return fmt.Sprintf("%d rows failed, more than the %d allowed (--max-failures)", failed, l.MaxFailures), nil
	case l.MaxFailureRatio > 0 && finished >= int64(l.MinSample) && float64(failed)/float64(finished) > l.MaxFailureRatio:
		return fmt.Sprintf("%d of %d finished rows failed (%.0f%%), more than the %.0f%% allowed (--max-failure-ratio)",
			failed, finished, 100*float64(failed)/float64(finished), 100*l.MaxFailureRatio), nil
	}
	return "", nil
}

// Requeue returns rows to queued before their messages are replayed from
// the dead-letter queue, counting the replay, and reopens the job. Rows
// already succeeded, rejected, duplicate or cancelled are left alone; rows
// of a cancelled job too (ErrCancelled).
func (s *Store) Requeue(ctx context.Context, jobID string, rows []int64) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var cancelled bool
		if err := tx.QueryRow(ctx, `SELECT cancelled_at IS NOT NULL FROM bulk_import_job WHERE job_id = $1 FOR UPDATE`, jobID).Scan(&cancelled); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("job %s: %w", jobID, ErrJobNotFound)
			}
			return err
		}
		if cancelled {
			return fmt.Errorf("job %s: %w", jobID, ErrCancelled)
		}
		tag, err := tx.Exec(ctx, `UPDATE bulk_import_row SET state = 'queued', replays = replays + 1, finished_at = NULL, updated_at = now()
			WHERE job_id = $1 AND row_no = ANY($2) AND state IN ('failed', 'queued') AND purged_at IS NULL`, jobID, rows)
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		if n > 0 {
			_, err = tx.Exec(ctx, `UPDATE bulk_import_job SET finished_at = NULL, updated_at = now() WHERE job_id = $1`, jobID)
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("requeue rows of job %s: %w", jobID, err)
	}
	return n, nil
}

// Purge marks rows failed for good: their dead-letter messages are being
// deleted and they will not be replayed. Rows still queued (their messages
// were moved by SQS after a worker died on every attempt) fail with code.
func (s *Store) Purge(ctx context.Context, jobID string, rows []int64, code string) (int64, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE bulk_import_row
		SET state = 'failed', purged_at = now(), updated_at = now(), finished_at = coalesce(finished_at, now()),
		    error_code = coalesce(error_code, $3),
		    error_message = coalesce(error_message || ' ', '') || '(purged from the dead-letter queue: not retried)'
		WHERE job_id = $1 AND row_no = ANY($2) AND state IN ('failed', 'queued') AND purged_at IS NULL`, jobID, rows, code)
	if err != nil {
		return 0, fmt.Errorf("purge rows of job %s: %w", jobID, err)
	}
	return tag.RowsAffected(), nil
}
