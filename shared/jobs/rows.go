package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// RowInfo is what a worker needs to know about a row before registering it.
type RowInfo struct {
	State             string
	Email             string
	FEIN              string
	ForceRegistration bool
	Attempts          int
	// Of a failed row: its error, where its dead letter stands
	// (DeadLetterPending: claimed, perhaps not sent), and how long ago the
	// failure was claimed.
	ErrorCode    string
	ErrorMessage string
	DeadLetter   string
	FailedFor    time.Duration
}

// Dead-letter states of a failed row.
const (
	DeadLetterPending = "pending" // the failure is claimed; the message may not be in the DLQ yet
	DeadLetterSent    = "sent"    // the message is in the dead-letter queue
)

// QueueStartAttempt queues, into a batch, recording that a worker received
// the row's message for the receiveCount-th time (attempts only grow: a
// stale redelivery never lowers them) and reading the row as recorded.
// into is filled when the batch is sent, with an empty State when the row
// does not exist.
func (s *Store) QueueStartAttempt(b *pgx.Batch, jobID string, row int64, receiveCount int, into *RowInfo) {
	b.Queue(`UPDATE bulk_import_row r SET attempts = greatest(r.attempts, $3), updated_at = now()
		FROM bulk_import_job j
		WHERE r.job_id = $1 AND r.row_no = $2 AND j.job_id = r.job_id
		RETURNING r.state, coalesce(r.email, ''), coalesce(r.fein, ''), j.force_registration, r.attempts,
			coalesce(r.error_code, ''), coalesce(r.error_message, ''), coalesce(r.dead_letter, ''),
			coalesce(extract(epoch FROM now() - r.finished_at), 0)::float8`,
		jobID, row, receiveCount).Query(func(rows pgx.Rows) error {
		got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (RowInfo, error) {
			var ri RowInfo
			var failedFor float64
			err := r.Scan(&ri.State, &ri.Email, &ri.FEIN, &ri.ForceRegistration, &ri.Attempts, &ri.ErrorCode, &ri.ErrorMessage, &ri.DeadLetter, &failedFor)
			ri.FailedFor = time.Duration(failedFor * float64(time.Second))
			return ri, err
		})
		if len(got) == 1 {
			*into = got[0]
		}
		return err
	})
}

// QueueSucceed queues, into a batch, marking the row succeeded. A row that
// failed or was cancelled meanwhile (a duplicate delivery gave up; the job
// was cancelled while the row was being registered) is corrected: it is
// registered, and success is the truth once reached. Whether the job is
// now complete is the maintainer's business, not the row's; but a
// correction may come after the job's completion was recorded, so the
// job is reopened (and completed again, its files rewritten) when it is
// cancelled or finished. For a running job, the usual case, that second
// statement matches nothing and locks nothing; for a cancelled one it
// waits for a completion in progress, so the completion either saw this
// row succeeded or is undone.
func (s *Store) QueueSucceed(b *pgx.Batch, jobID string, row int64) {
	b.Queue(`UPDATE bulk_import_row
		SET state = 'succeeded', error_code = NULL, error_message = NULL, finished_at = now(), updated_at = now()
		WHERE job_id = $1 AND row_no = $2 AND state IN ('queued', 'failed', 'cancelled')`, jobID, row)
	b.Queue(`UPDATE bulk_import_job SET finished_at = NULL, updated_at = now()
		WHERE job_id = $1 AND (finished_at IS NOT NULL OR cancelled_at IS NOT NULL)`, jobID)
}

// ClaimFailure marks a queued row failed for good with an error code and
// message, its dead letter pending, and reports whether this call did: of
// several deliveries of one row failing at once, one claims the failure
// and sends the one dead letter. Call DeadLettered once it is sent.
func (s *Store) ClaimFailure(ctx context.Context, jobID string, row int64, code, message string) (bool, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE bulk_import_row
		SET state = 'failed', error_code = $3, error_message = $4, dead_letter = 'pending', finished_at = now(), updated_at = now()
		WHERE job_id = $1 AND row_no = $2 AND state = 'queued'`, jobID, row, code, message)
	if err != nil {
		return false, fmt.Errorf("mark job %s row %d failed: %w", jobID, row, err)
	}
	return tag.RowsAffected() == 1, nil
}

// DeadLettered records that the failed row's dead letter is in the
// dead-letter queue.
func (s *Store) DeadLettered(ctx context.Context, jobID string, row int64) error {
	if _, err := s.pool.Exec(ctx, `UPDATE bulk_import_row SET dead_letter = 'sent'
		WHERE job_id = $1 AND row_no = $2 AND state = 'failed' AND dead_letter = 'pending'`, jobID, row); err != nil {
		return fmt.Errorf("mark job %s row %d dead-lettered: %w", jobID, row, err)
	}
	return nil
}

// NoteError records the last (transient) error of a row that will be retried.
func (s *Store) NoteError(ctx context.Context, jobID string, row int64, code, message string) error {
	if _, err := s.pool.Exec(ctx, `UPDATE bulk_import_row SET error_code = $3, error_message = $4, updated_at = now()
		WHERE job_id = $1 AND row_no = $2 AND state = 'queued'`, jobID, row, code, message); err != nil {
		return fmt.Errorf("note error on job %s row %d: %w", jobID, row, err)
	}
	return nil
}

// Pruned reports whether the job exists and its row data was deleted by
// retention: a message of such a job has no row to register.
func (s *Store) Pruned(ctx context.Context, jobID string) (bool, error) {
	var pruned bool
	err := s.pool.QueryRow(ctx, `SELECT pruned_at IS NOT NULL FROM bulk_import_job WHERE job_id = $1`, jobID).Scan(&pruned)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read job %s: %w", jobID, err)
	}
	return pruned, nil
}

// Requeue returns rows to queued before their messages are replayed from
// the dead-letter queue, counting the replay, and reopens the job (its
// completion is recorded again once every row is final). Rows already
// succeeded, rejected, duplicate or cancelled are left alone; rows of a
// cancelled job too (ErrCancelled), and of a pruned one (ErrPruned). The
// job's row is locked first, as the completion of a job locks it, so a
// job is never completed with rows queued by a replay.
func (s *Store) Requeue(ctx context.Context, jobID string, rows []int64) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		j, err := lockJob(ctx, tx, jobID)
		if err != nil {
			return err
		}
		switch {
		case j.cancelled:
			return fmt.Errorf("job %s: %w", jobID, ErrCancelled)
		case j.pruned:
			return fmt.Errorf("job %s: %w", jobID, ErrPruned)
		}
		tag, err := tx.Exec(ctx, `UPDATE bulk_import_row SET state = 'queued', replays = replays + 1, dead_letter = NULL, finished_at = NULL, updated_at = now()
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

// lockedJob is what lockJob reads of a job.
type lockedJob struct{ finished, cancelled, pruned bool }

// lockJob locks the job's row for the rest of tx (as a completion does)
// and reads its state; ErrJobNotFound when there is none.
func lockJob(ctx context.Context, tx pgx.Tx, jobID string) (lockedJob, error) {
	var j lockedJob
	err := tx.QueryRow(ctx, `SELECT finished_at IS NOT NULL, cancelled_at IS NOT NULL, pruned_at IS NOT NULL
		FROM bulk_import_job WHERE job_id = $1 FOR UPDATE`, jobID).Scan(&j.finished, &j.cancelled, &j.pruned)
	if errors.Is(err, pgx.ErrNoRows) {
		return j, fmt.Errorf("job %s: %w", jobID, ErrJobNotFound)
	}
	return j, err
}

// Purge marks rows failed for good: their dead-letter messages are being
// deleted and they will not be replayed. Rows still queued (their messages
// were moved by SQS after a worker died on every attempt) fail with code.
func (s *Store) Purge(ctx context.Context, jobID string, rows []int64, code string) (int64, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE bulk_import_row
		SET state = 'failed', purged_at = now(), dead_letter = NULL, updated_at = now(), finished_at = coalesce(finished_at, now()),
		    error_code = coalesce(error_code, $3),
		    error_message = coalesce(error_message || ' ', '') || '(purged from the dead-letter queue: not retried)'
		WHERE job_id = $1 AND row_no = ANY($2) AND state IN ('failed', 'queued') AND purged_at IS NULL`, jobID, rows, code)
	if err != nil {
		return 0, fmt.Errorf("purge rows of job %s: %w", jobID, err)
	}
	return tag.RowsAffected(), nil
}
