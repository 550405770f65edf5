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
