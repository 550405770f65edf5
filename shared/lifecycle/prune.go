package lifecycle

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// PruneOptions pace the deletion of a job's rows.
type PruneOptions struct {
	Batch int           // rows deleted per transaction (default 1000)
	Pause time.Duration // between batches, so a big job never means a long lock
	// Continue, if set, is asked before each batch; false stops the
	// deletion (it goes on at the next call).
	Continue func() bool
}

// Prune deletes the per-row data of a finished job: its rows (their raw
// fields, emails, FEINs and errors) and the FINEOS web id plans of emails
// no other row names any more. First, under the job's lock, it keeps the
// job's counts by state and failures by code (Status and Details read
// them from then on) and marks the job pruned, so that it is never
// reopened, replayed or re-run; then it deletes in batches. It returns the
// rows deleted; an interrupted call is finished by the next one.
func (l *Lifecycle) Prune(ctx context.Context, jobID string, o PruneOptions) (int64, error) {
	if o.Batch <= 0 {
		o.Batch = 1000
	}
	err := l.transition(ctx, jobID, func(tx pgx.Tx, s state) error {
		switch {
		case !s.finished:
			return fmt.Errorf("job %s is not finished", jobID)
		case s.pruned:
			return nil
		}
		sum, err := l.jobs.Summarize(ctx, tx, jobID)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE bulk_import_job SET pruned_at = now(), summary = $2, updated_at = now() WHERE job_id = $1`, jobID, sum)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune job %s: %w", jobID, err)
	}
	var deleted int64
	for {
		if o.Continue != nil && !o.Continue() {
			return deleted, nil
		}
		n, err := l.pruneBatch(ctx, jobID, o.Batch)
		if err != nil {
			return deleted, fmt.Errorf("prune job %s: delete rows: %w", jobID, err)
		}
		deleted += n
		if n < int64(o.Batch) {
			return deleted, nil
		}
		select {
		case <-ctx.Done():
			return deleted, ctx.Err()
		case <-time.After(o.Pause):
		}
	}
}

// pruneBatch deletes up to n rows of a pruned job, and the FINEOS plans of
// their emails that no other row names.
func (l *Lifecycle) pruneBatch(ctx context.Context, jobID string, n int) (int64, error) {
	var deleted int64
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `DELETE FROM bulk_import_row WHERE job_id = $1 AND row_no IN
			(SELECT row_no FROM bulk_import_row WHERE job_id = $1 ORDER BY row_no LIMIT $2) RETURNING email`, jobID, n)
		if err != nil {
			return err
		}
		emails, err := pgx.CollectRows(rows, pgx.RowTo[*string])
		if err != nil {
			return err
		}
		deleted = int64(len(emails))
		seen := map[string]bool{}
		var unique []string
		for _, e := range emails {
			if e != nil && !seen[*e] {
				seen[*e] = true
				unique = append(unique, *e)
			}
		}
		if len(unique) == 0 {
			return nil
		}
		_, err = tx.Exec(ctx, `DELETE FROM bulk_import_fineos_plan p WHERE p.email = ANY($1)
			AND NOT EXISTS (SELECT 1 FROM bulk_import_row r WHERE r.email = p.email)`, unique)
		return err
	})
	return deleted, err
}
