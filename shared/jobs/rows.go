package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

const (
	startAttemptSQL = `UPDATE bulk_import_row r SET attempts = greatest(r.attempts, $3), updated_at = now()
		FROM bulk_import_job j
		WHERE r.job_id = $1 AND r.row_no = $2 AND j.job_id = r.job_id
		RETURNING r.state, coalesce(r.email, ''), coalesce(r.fein, ''), j.force_registration, r.attempts`
	succeedSQL = `UPDATE bulk_import_row
		SET state = 'succeeded', error_code = NULL, error_message = NULL, finished_at = now(), updated_at = now()
		WHERE job_id = $1 AND row_no = $2 AND state IN ('queued', 'failed', 'cancelled')`
)

// RowInfo is what a worker needs to know about a row before registering it.
type RowInfo struct {
	State             string
	Email             string
	FEIN              string
	ForceRegistration bool
	Attempts          int
}

// StartAttempt records that a worker received the row's message for the
// receiveCount-th time and returns the row as recorded, or ErrRowNotFound.
// Attempts only grow: a stale redelivery never lowers them.
func (s *Store) StartAttempt(ctx context.Context, jobID string, row int64, receiveCount int) (RowInfo, error) {
	var ri RowInfo
	err := s.pool.QueryRow(ctx, startAttemptSQL, jobID, row, receiveCount).Scan(&ri.State, &ri.Email, &ri.FEIN, &ri.ForceRegistration, &ri.Attempts)
	if errors.Is(err, pgx.ErrNoRows) {
		return RowInfo{}, fmt.Errorf("job %s row %d: %w", jobID, row, ErrRowNotFound)
	}
	if err != nil {
		return RowInfo{}, fmt.Errorf("start attempt on job %s row %d: %w", jobID, row, err)
	}
	return ri, nil
}

// QueueStartAttempt queues StartAttempt into a batch; into is filled when
// the batch is sent, with an empty State when the row does not exist.
func (s *Store) QueueStartAttempt(b *pgx.Batch, jobID string, row int64, receiveCount int, into *RowInfo) {
	b.Queue(startAttemptSQL, jobID, row, receiveCount).Query(func(rows pgx.Rows) error {
		got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (RowInfo, error) {
			var ri RowInfo
			return ri, r.Scan(&ri.State, &ri.Email, &ri.FEIN, &ri.ForceRegistration, &ri.Attempts)
		})
		if len(got) == 1 {
			*into = got[0]
		}
		return err
	})
}

// QueueSucceed queues Succeed into a batch, followed by a check of whether
// the job still has queued rows (left is filled when the batch is sent):
// when it has none, the job may be complete.
func (s *Store) QueueSucceed(b *pgx.Batch, jobID string, row int64, left *bool) {
	b.Queue(succeedSQL, jobID, row)
	b.Queue(`SELECT EXISTS (SELECT 1 FROM bulk_import_row WHERE job_id = $1 AND state = 'queued')`, jobID).
		QueryRow(func(r pgx.Row) error { return r.Scan(left) })
}

// Succeed marks the row succeeded. A row that failed or was cancelled
// meanwhile (a duplicate delivery gave up; the job was cancelled while the
// row was being registered) is corrected: it is registered, and success is
// the truth once reached.
func (s *Store) Succeed(ctx context.Context, jobID string, row int64) error {
	if _, err := s.pool.Exec(ctx, succeedSQL, jobID, row); err != nil {
		return fmt.Errorf("mark job %s row %d succeeded: %w", jobID, row, err)
	}
	return nil
}

// Fail marks a queued row failed for good with an error code and message.
func (s *Store) Fail(ctx context.Context, jobID string, row int64, code, message string) error {
	if _, err := s.pool.Exec(ctx, `UPDATE bulk_import_row
		SET state = 'failed', error_code = $3, error_message = $4, finished_at = now(), updated_at = now()
		WHERE job_id = $1 AND row_no = $2 AND state = 'queued'`, jobID, row, code, message); err != nil {
		return fmt.Errorf("mark job %s row %d failed: %w", jobID, row, err)
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
