package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// PendingRow is a queued row whose message is to be sent.
type PendingRow struct {
	Row   int64
	Email string
	FEIN  string
}

// Selection picks the queued rows of a job whose messages are to be sent.
//
// A row's last sign of life is the latest of when its message was sent and
// when the row last changed (a worker received its message, noted an
// error, a replay requeued it).
type Selection struct {
	// Unsent selects only rows whose message was never sent (a splitter
	// run); otherwise sent rows are selected too (a re-send).
	Unsent bool
	// IdleFor selects only rows whose last sign of life is at least this
	// old (0: every queued row).
	IdleFor time.Duration
	// Rows with MaxAttempts attempts or more (0: no such rule) are left
	// until their last sign of life is RedrivenIdleFor old: SQS moved their
	// message to the dead-letter queue, where it stays until the queue's
	// retention passes.
	MaxAttempts     int
	RedrivenIdleFor time.Duration
}

// where returns the condition of the selection on bulk_import_row r, its
// parameters numbered from next.
func (sel Selection) where(next int) (string, []any) {
	cond := fmt.Sprintf(`r.state = 'queued'
		AND ($%d = false OR r.sent_at IS NULL)
		AND greatest(r.sent_at, r.updated_at) <= now() - $%d * interval '1 second'
		AND ($%d = 0 OR r.attempts < $%d OR greatest(r.sent_at, r.updated_at) <= now() - $%d * interval '1 second')`,
		next, next+1, next+2, next+2, next+3)
	return cond, []any{sel.Unsent, sel.IdleFor.Seconds(), sel.MaxAttempts, sel.RedrivenIdleFor.Seconds()}
}

// RowsToSend returns up to limit rows of the job that the selection picks,
// after row afterRow, in row order.
func (s *Store) RowsToSend(ctx context.Context, jobID string, sel Selection, afterRow int64, limit int) ([]PendingRow, error) {
	cond, args := sel.where(4)
	rows, err := s.pool.Query(ctx, `SELECT r.row_no, r.email, r.fein FROM bulk_import_row r
		WHERE r.job_id = $1 AND r.row_no > $2 AND `+cond+` ORDER BY r.row_no LIMIT $3`,
		append([]any{jobID, afterRow, limit}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("read rows to send of job %s: %w", jobID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (PendingRow, error) {
		var p PendingRow
		return p, r.Scan(&p.Row, &p.Email, &p.FEIN)
	})
	if err != nil {
		return nil, fmt.Errorf("read rows to send of job %s: %w", jobID, err)
	}
	return out, nil
}

// JobsToResend returns the jobs, recorded, not cancelled and not pruned,
// that have rows the selection picks, with how many.
func (s *Store) JobsToResend(ctx context.Context, sel Selection) (map[string]int64, error) {
	cond, args := sel.where(1)
	rows, err := s.pool.Query(ctx, `SELECT r.job_id, count(*) FROM bulk_import_row r JOIN bulk_import_job j USING (job_id)
		WHERE j.recorded_at IS NOT NULL AND j.cancelled_at IS NULL AND j.pruned_at IS NULL AND j.finished_at IS NULL AND `+cond+`
		GROUP BY r.job_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("find rows to re-send: %w", err)
	}
	out := map[string]int64{}
	var job string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&job, &n}, func() error { out[job] = n; return nil }); err != nil {
		return nil, fmt.Errorf("find rows to re-send: %w", err)
	}
	return out, nil
}
