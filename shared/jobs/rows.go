package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
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
	err := s.pool.QueryRow(ctx, `UPDATE bulk_import_row r SET attempts = greatest(r.attempts, $3), updated_at = now()
		FROM bulk_import_job j
		WHERE r.job_id = $1 AND r.row_no = $2 AND j.job_id = r.job_id
		RETURNING r.state, coalesce(r.email, ''), coalesce(r.fein, ''), j.force_registration, r.attempts`,
		jobID, row, receiveCount).Scan(&ri.State, &ri.Email, &ri.FEIN, &ri.ForceRegistration, &ri.Attempts)
	if errors.Is(err, pgx.ErrNoRows) {
		return RowInfo{}, fmt.Errorf("job %s row %d: %w", jobID, row, ErrRowNotFound)
	}
	if err != nil {
		return RowInfo{}, fmt.Errorf("start attempt on job %s row %d: %w", jobID, row, err)
	}
	return ri, nil
}

// Succeed marks the row succeeded. A row that failed or was cancelled
// meanwhile (a duplicate delivery gave up; the job was cancelled while the
// row was being registered) is corrected: it is registered, and success is
// the truth once reached.
func (s *Store) Succeed(ctx context.Context, jobID string, row int64) error {
	if _, err := s.pool.Exec(ctx, `UPDATE bulk_import_row
		SET state = 'succeeded', error_code = NULL, error_message = NULL, finished_at = now(), updated_at = now()
		WHERE job_id = $1 AND row_no = $2 AND state IN ('queued', 'failed', 'cancelled')`, jobID, row); err != nil {
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
