package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"

	"github.com/massgov/bulk-user-import/shared/csvrows"
	"github.com/massgov/bulk-user-import/shared/jobs"
)

// Create records a new job, or returns the existing one with that id.
// Re-running a job with a different force-registration setting is an
// error (its rows would be registered two different ways), and so is
// re-running a cancelled or pruned job; these are checked under the job's
// lock before anything changes. Limits given for an existing job then
// replace its limits.
func (l *Lifecycle) Create(ctx context.Context, id string, force bool, limits jobs.Limits) (job jobs.Job, created bool, err error) {
	if limits.MinSample <= 0 {
		limits.MinSample = jobs.DefaultMinSample
	}
	err = pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO bulk_import_job (job_id, force_registration, max_failures, max_failure_ratio, min_sample)
			VALUES ($1, $2, nullif($3::integer, 0), nullif($4::double precision, 0), $5) ON CONFLICT (job_id) DO NOTHING`,
			id, force, limits.MaxFailures, limits.MaxFailureRatio, limits.MinSample)
		if err != nil {
			return err
		}
		created = tag.RowsAffected() == 1
		s, err := lockJob(ctx, tx, id, exclusive)
		if err != nil {
			return err
		}
		if s.force != force {
			return fmt.Errorf("job %s was started with force registration %t; re-run it the same way or use a new --job", id, s.force)
		}
		if err := refuse(id, s); err != nil {
			return fmt.Errorf("%w; start a new job", err)
		}
		if !created && (limits.MaxFailures > 0 || limits.MaxFailureRatio > 0) {
			_, err = tx.Exec(ctx, `UPDATE bulk_import_job SET max_failures = nullif($2::integer, 0), max_failure_ratio = nullif($3::double precision, 0),
				min_sample = $4, updated_at = now() WHERE job_id = $1`, id, limits.MaxFailures, limits.MaxFailureRatio, limits.MinSample)
		}
		return err
	})
	if err != nil {
		return jobs.Job{}, false, fmt.Errorf("create job %s: %w", id, err)
	}
	job, err = l.jobs.Job(ctx, id)
	if err != nil {
		return jobs.Job{}, false, err
	}
	return job, created, nil
}

// Rows yields the rows of a source; csvrows.Reader is one. Next returns
// io.EOF after the last row; any other error refuses the source.
type Rows interface {
	Next() (csvrows.Row, error)
}

// RecordSource records every row of one source, in one transaction: it
// copies the rows and, under the job's lock, adds them (finding duplicates
// against the whole job), marks the job not recorded (until the run marks
// it recorded, MarkRecorded) and reopens it if it was finished. Either all
// of the source's rows are recorded, or (when rows fails) none is, and
// that error is returned as is. A job cancelled or pruned meanwhile takes
// no rows (jobs.ErrCancelled, jobs.ErrPruned). The caller holds the job's
// run lock (jobs.Store.Lock) for its whole run, as the splitter does: no
// completion is recorded while it is held, however long a source takes to
// read, and none is left pending if the run dies.
func (l *Lifecycle) RecordSource(ctx context.Context, jobID, source string, header []string, rows Rows) (jobs.SourceCounts, error) {
	var counts jobs.SourceCounts
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		if err := copyRows(ctx, tx, rows, &counts); err != nil {
			return err
		}
		s, err := lockJob(ctx, tx, jobID, exclusive)
		if err != nil {
			return err
		}
		if err := refuse(jobID, s); err != nil {
			return err
		}
		if counts.Duplicates, err = addRows(ctx, tx, jobID, source, header, counts.Rows); err != nil {
			return fmt.Errorf("record source: %w", err)
		}
		counts.Accepted -= counts.Duplicates
		// New rows: the job is recorded again, and not finished.
		_, err = tx.Exec(ctx, `UPDATE bulk_import_job SET finished_at = NULL, recorded_at = NULL, updated_at = now() WHERE job_id = $1`, jobID)
		return err
	})
	if err != nil {
		return jobs.SourceCounts{}, err
	}
	return counts, nil
}

// copyRows copies the source's rows into a staging table of tx.
func copyRows(ctx context.Context, tx pgx.Tx, rows Rows, counts *jobs.SourceCounts) error {
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE bulk_import_staging (
		line integer, fields text[], email text, fein text, error_code text, error_message text) ON COMMIT DROP`); err != nil {
		return fmt.Errorf("record source: staging table: %w", err)
	}
	src := &copySource{rows: rows, counts: counts}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"bulk_import_staging"},
		[]string{"line", "fields", "email", "fein", "error_code", "error_message"}, src); err != nil {
		if src.err != nil {
			return src.err // the source's own error, not the copy's
		}
		return fmt.Errorf("record source: copy rows: %w", err)
	}
	return nil
}

// addRows records the source and moves the staged rows into the job after
// its last row; it returns the rows that repeat an (email, fein) pair of
// the job.
func addRows(ctx context.Context, tx pgx.Tx, jobID, source string, header []string, n int64) (int64, error) {
	var idx int
	if err := tx.QueryRow(ctx, `INSERT INTO bulk_import_source (job_id, source_idx, source, header, row_count)
		SELECT $1, coalesce(max(source_idx), 0) + 1, $2, $3, $4 FROM bulk_import_source WHERE job_id = $1
		RETURNING source_idx`, jobID, source, header, n).Scan(&idx); err != nil {
		return 0, err
	}
	var base int64
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(row_no), 0) FROM bulk_import_row WHERE job_id = $1`, jobID).Scan(&base); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO bulk_import_row
		(job_id, row_no, source_idx, line, fields, email, fein, state, error_code, error_message, finished_at)
		SELECT $1, $2 + row_number() OVER (ORDER BY line), $3, line, fields, email, fein,
			CASE WHEN error_code IS NULL THEN 'queued' ELSE 'rejected' END, error_code, error_message,
			CASE WHEN error_code IS NULL THEN NULL ELSE now() END
		FROM bulk_import_staging`, jobID, base, idx); err != nil {
		return 0, fmt.Errorf("insert rows: %w", err)
	}
	// The rows were inserted by this transaction: the table's statistics
	// do not know them (on a table never analyzed, as at the first import,
	// the planner expects a row or two), and a nested loop over the window
	// would recompute it for every row, quadratic: hours at 100,000 rows.
	// A hash join is linear whatever the estimates.
	if _, err := tx.Exec(ctx, `SET LOCAL enable_nestloop = off`); err != nil {
		return 0, fmt.Errorf("find duplicates: %w", err)
	}
	tag, err := tx.Exec(ctx, duplicatesSQL, jobID, idx)
	if err != nil {
		return 0, fmt.Errorf("find duplicates: %w", err)
	}
	if _, err := tx.Exec(ctx, `SET LOCAL enable_nestloop = on`); err != nil {
		return 0, fmt.Errorf("find duplicates: %w", err)
	}
	return tag.RowsAffected(), nil
}

// duplicatesSQL marks the rows of source $2 of job $1 that repeat an
// (email, fein) pair of an earlier row of the job as duplicates of it.
const duplicatesSQL = `UPDATE bulk_import_row r
	SET state = 'duplicate', duplicate_of = d.first_row, finished_at = now(), updated_at = now()
	FROM (SELECT row_no, min(row_no) OVER (PARTITION BY email, fein) AS first_row
	      FROM bulk_import_row WHERE job_id = $1 AND state <> 'rejected') d
	WHERE r.job_id = $1 AND r.source_idx = $2 AND r.row_no = d.row_no
	  AND d.first_row <> r.row_no AND r.state = 'queued'`

// copySource feeds rows to COPY and counts them.
type copySource struct {
	rows   Rows
	counts *jobs.SourceCounts
	row    csvrows.Row
	err    error
}

func (c *copySource) Next() bool {
	row, err := c.rows.Next()
	if errors.Is(err, io.EOF) {
		return false
	}
	if err != nil {
		c.err = err
		return false
	}
	c.row = row
	c.counts.Rows++
	if row.Reject != nil {
		c.counts.Rejected++
	} else {
		c.counts.Accepted++
	}
	return true
}

func (c *copySource) Values() ([]any, error) {
	r := c.row
	if r.Reject != nil {
		return []any{int32(r.Line), r.Fields, nil, nil, r.Reject.Code, r.Reject.Error()}, nil
	}
	return []any{int32(r.Line), r.Fields, r.Email, r.FEIN, nil, nil}, nil
}

func (c *copySource) Err() error { return c.err }

// MarkRecorded notes that every source of the job given to a run is
// recorded: from now on the job may be completed.
func (l *Lifecycle) MarkRecorded(ctx context.Context, jobID string) error {
	err := l.transition(ctx, jobID, func(tx pgx.Tx, s state) error {
		if s.recorded {
			return nil
		}
		_, err := tx.Exec(ctx, `UPDATE bulk_import_job SET recorded_at = now(), updated_at = now() WHERE job_id = $1`, jobID)
		return err
	})
	if err != nil {
		return fmt.Errorf("mark job %s recorded: %w", jobID, err)
	}
	return nil
}

// MarkSent notes that every row of the job has been sent.
func (l *Lifecycle) MarkSent(ctx context.Context, jobID string) error {
	err := l.transition(ctx, jobID, func(tx pgx.Tx, _ state) error {
		_, err := tx.Exec(ctx, `UPDATE bulk_import_job SET sent_at = now(), updated_at = now() WHERE job_id = $1`, jobID)
		return err
	})
	if err != nil {
		return fmt.Errorf("mark job %s sent: %w", jobID, err)
	}
	return nil
}
