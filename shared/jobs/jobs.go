// Package jobs keeps the import's bookkeeping in PostgreSQL: one row per
// job, per source file and per CSV data row, and each row's state. Every row
// ends in exactly one final state: succeeded, failed (with a code and a
// message), rejected (with its line) or duplicate (of an earlier row).
package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/shared/csvrows"
)

// Row states.
const (
	Queued    = "queued"    // recorded, to be (or being) registered
	Succeeded = "succeeded" // registered
	Failed    = "failed"    // registration failed; error_code says why
	Rejected  = "rejected"  // refused by validation; never enqueued
	Duplicate = "duplicate" // same (email, fein) as an earlier row of the job
	Cancelled = "cancelled" // the job was cancelled before the row was registered
)

// CodeCancelled is the error code of cancelled rows.
const CodeCancelled = "CANCELLED"

// Errors.
var (
	ErrJobNotFound = errors.New("job not found")
	ErrRowNotFound = errors.New("row not found")
	ErrJobBusy     = errors.New("another process is sending the job's messages (a splitter, splitter resend or a worker's maintainer)")
	ErrCancelled   = errors.New("job is cancelled")
	ErrPruned      = errors.New("the job's row data was deleted (retention)")
)

// Store reads and writes the bookkeeping tables.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a store on pool. Call Migrate first.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Job is an import job.
type Job struct {
	ID                string
	ForceRegistration bool
	CreatedAt         time.Time
	RecordedAt        *time.Time
	SentAt            *time.Time
	FinishedAt        *time.Time
	CancelledAt       *time.Time
	CancelReason      string
	Limits            Limits
	Completion        int // times the job's completion was recorded
	Results           Results
	PrunedAt          *time.Time // the row data was deleted (retention)
}

// Results says what became of the result files of the job's completions.
type Results struct {
	Written   int        // the completion whose result files were handled
	WrittenAt *time.Time // when
	Location  string     // where they were written ("" when they were not)
	Error     string     // why the last write failed, or why none was made
	Failures  int        // failed writes of the current completion
}

// Limits cancel a job that fails too much: after MinSample rows finished
// (succeeded or failed), more than MaxFailures failed rows, or a share of
// failed rows above MaxFailureRatio. Zero values mean no limit.
type Limits struct {
	MaxFailures     int
	MaxFailureRatio float64
	MinSample       int
}

// DefaultMinSample is the number of finished rows before the failure ratio
// is checked.
const DefaultMinSample = 20

// Lock takes the job's exclusive lock for the duration of a splitter run
// or a re-send, so two processes never send the same job's rows at once
// (two runs with the same --job cannot interleave). It returns ErrJobBusy
// at once if another process holds it. The lock dies with the connection,
// so a crashed splitter never leaves it behind.
func (s *Store) Lock(ctx context.Context, jobID string) (unlock func(), err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock job %s: %w", jobID, err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended('bulk_import_job:' || $1, 0))`, jobID).Scan(&ok); err != nil {
		conn.Release()
		return nil, fmt.Errorf("lock job %s: %w", jobID, err)
	}
	if !ok {
		conn.Release()
		return nil, fmt.Errorf("job %s: %w", jobID, ErrJobBusy)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = conn.Exec(ctx, `SELECT pg_advisory_unlock(hashtextextended('bulk_import_job:' || $1, 0))`, jobID)
		conn.Release()
	}, nil
}

// CreateJob records a new job, or returns the existing one with that id.
// Re-running a job with a different force-registration setting is an error:
// its rows would be registered two different ways; so is re-running a
// cancelled job. Limits given for an existing job replace its limits.
func (s *Store) CreateJob(ctx context.Context, id string, force bool, limits Limits) (job Job, created bool, err error) {
	if limits.MinSample <= 0 {
		limits.MinSample = DefaultMinSample
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO bulk_import_job (job_id, force_registration, max_failures, max_failure_ratio, min_sample)
		VALUES ($1, $2, nullif($3::integer, 0), nullif($4::double precision, 0), $5) ON CONFLICT (job_id) DO NOTHING`,
		id, force, limits.MaxFailures, limits.MaxFailureRatio, limits.MinSample)
	if err != nil {
		return Job{}, false, fmt.Errorf("create job %s: %w", id, err)
	}
	created = tag.RowsAffected() == 1
	if !created && (limits.MaxFailures > 0 || limits.MaxFailureRatio > 0) {
		if _, err := s.pool.Exec(ctx, `UPDATE bulk_import_job SET max_failures = nullif($2::integer, 0), max_failure_ratio = nullif($3::double precision, 0),
			min_sample = $4, updated_at = now() WHERE job_id = $1`, id, limits.MaxFailures, limits.MaxFailureRatio, limits.MinSample); err != nil {
			return Job{}, false, fmt.Errorf("set limits of job %s: %w", id, err)
		}
	}
	job, err = s.Job(ctx, id)
	if err != nil {
		return Job{}, false, err
	}
	if job.ForceRegistration != force {
		return Job{}, false, fmt.Errorf("job %s was started with force registration %t; re-run it the same way or use a new --job", id, job.ForceRegistration)
	}
	if job.CancelledAt != nil {
		return Job{}, false, fmt.Errorf("job %s: %w (%s); start a new job", id, ErrCancelled, job.CancelReason)
	}
	if job.PrunedAt != nil {
		return Job{}, false, fmt.Errorf("job %s: %w; start a new job", id, ErrPruned)
	}
	return job, created, nil
}

// Job returns the job with that id, or ErrJobNotFound.
func (s *Store) Job(ctx context.Context, id string) (Job, error) {
	var j Job
	var maxFailures *int
	var maxRatio *float64
	err := s.pool.QueryRow(ctx, `SELECT job_id, force_registration, created_at, recorded_at, sent_at, finished_at,
		cancelled_at, coalesce(cancel_reason, ''), max_failures, max_failure_ratio, min_sample, completion,
		results_written, results_written_at, coalesce(results_location, ''), coalesce(results_error, ''), results_failures, pruned_at
		FROM bulk_import_job WHERE job_id = $1`, id).
		Scan(&j.ID, &j.ForceRegistration, &j.CreatedAt, &j.RecordedAt, &j.SentAt, &j.FinishedAt,
			&j.CancelledAt, &j.CancelReason, &maxFailures, &maxRatio, &j.Limits.MinSample, &j.Completion,
			&j.Results.Written, &j.Results.WrittenAt, &j.Results.Location, &j.Results.Error, &j.Results.Failures, &j.PrunedAt)
	if maxFailures != nil {
		j.Limits.MaxFailures = *maxFailures
	}
	if maxRatio != nil {
		j.Limits.MaxFailureRatio = *maxRatio
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return Job{}, fmt.Errorf("job %s: %w", id, ErrJobNotFound)
	}
	if err != nil {
		return Job{}, fmt.Errorf("read job %s: %w", id, err)
	}
	return j, nil
}

// SourceRecorded reports whether the source's rows are already recorded.
func (s *Store) SourceRecorded(ctx context.Context, jobID, source string) (bool, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM bulk_import_source WHERE job_id = $1 AND source = $2`, jobID, source).Scan(&n); err != nil {
		return false, fmt.Errorf("read sources of job %s: %w", jobID, err)
	}
	return n > 0, nil
}

// Rows yields the rows of a source; csvrows.Reader is one. Next returns
// io.EOF after the last row; any other error refuses the source.
type Rows interface {
	Next() (csvrows.Row, error)
}

// SourceCounts says what recording a source found.
type SourceCounts struct {
	Rows       int64 // data rows read (blank lines aside)
	Accepted   int64 // rows to register
	Rejected   int64 // rows refused by validation
	Duplicates int64 // rows repeating an (email, fein) pair of the job
}

// RecordSource records every row of one source in one transaction: either
// all of its rows are recorded, or (when rows fails) none is, and the error
// is returned as is. Duplicate pairs are found against the whole job.
func (s *Store) RecordSource(ctx context.Context, jobID, source string, header []string, rows Rows) (SourceCounts, error) {
	var counts SourceCounts
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var idx int
		if err := tx.QueryRow(ctx, `INSERT INTO bulk_import_source (job_id, source_idx, source, header, row_count)
			SELECT $1, coalesce(max(source_idx), 0) + 1, $2, $3, 0 FROM bulk_import_source WHERE job_id = $1
			RETURNING source_idx`, jobID, source, header).Scan(&idx); err != nil {
			return fmt.Errorf("record source: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE bulk_import_staging (
			line integer, fields text[], email text, fein text, error_code text, error_message text) ON COMMIT DROP`); err != nil {
			return fmt.Errorf("record source: staging table: %w", err)
		}
		src := &copySource{rows: rows, counts: &counts}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"bulk_import_staging"},
			[]string{"line", "fields", "email", "fein", "error_code", "error_message"}, src); err != nil {
			if src.err != nil {
				return src.err // the source's own error, not the copy's
			}
			return fmt.Errorf("record source: copy rows: %w", err)
		}
		var base int64
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(row_no), 0) FROM bulk_import_row WHERE job_id = $1`, jobID).Scan(&base); err != nil {
			return fmt.Errorf("record source: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO bulk_import_row
			(job_id, row_no, source_idx, line, fields, email, fein, state, error_code, error_message, finished_at)
			SELECT $1, $2 + row_number() OVER (ORDER BY line), $3, line, fields, email, fein,
				CASE WHEN error_code IS NULL THEN 'queued' ELSE 'rejected' END, error_code, error_message,
				CASE WHEN error_code IS NULL THEN NULL ELSE now() END
			FROM bulk_import_staging`, jobID, base, idx); err != nil {
			return fmt.Errorf("record source: insert rows: %w", err)
		}
		tag, err := tx.Exec(ctx, `UPDATE bulk_import_row r
			SET state = 'duplicate', duplicate_of = d.first_row, finished_at = now(), updated_at = now()
			FROM (SELECT row_no, min(row_no) OVER (PARTITION BY email, fein) AS first_row
			      FROM bulk_import_row WHERE job_id = $1 AND state <> 'rejected') d
			WHERE r.job_id = $1 AND r.source_idx = $2 AND r.row_no = d.row_no
			  AND d.first_row <> r.row_no AND r.state = 'queued'`, jobID, idx)
		if err != nil {
			return fmt.Errorf("record source: find duplicates: %w", err)
		}
		counts.Duplicates = tag.RowsAffected()
		counts.Accepted -= counts.Duplicates
		if _, err := tx.Exec(ctx, `UPDATE bulk_import_source SET row_count = $3 WHERE job_id = $1 AND source_idx = $2`, jobID, idx, counts.Rows); err != nil {
			return fmt.Errorf("record source: %w", err)
		}
		// New rows: the job is being recorded again, and not finished.
		_, err = tx.Exec(ctx, `UPDATE bulk_import_job SET recorded_at = NULL, finished_at = NULL, updated_at = now() WHERE job_id = $1`, jobID)
		return err
	})
	if err != nil {
		return SourceCounts{}, err
	}
	return counts, nil
}

// copySource feeds rows to COPY and counts them.
type copySource struct {
	rows   Rows
	counts *SourceCounts
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

// MarkRecorded notes that every source of the job given to a run is recorded.
func (s *Store) MarkRecorded(ctx context.Context, jobID string) error {
	if _, err := s.pool.Exec(ctx, `UPDATE bulk_import_job SET recorded_at = coalesce(recorded_at, now()), updated_at = now() WHERE job_id = $1`, jobID); err != nil {
		return fmt.Errorf("mark job %s recorded: %w", jobID, err)
	}
	return nil
}

// MarkJobSent notes that every row of the job has been sent.
func (s *Store) MarkJobSent(ctx context.Context, jobID string) error {
	if _, err := s.pool.Exec(ctx, `UPDATE bulk_import_job SET sent_at = now(), updated_at = now() WHERE job_id = $1`, jobID); err != nil {
		return fmt.Errorf("mark job %s sent: %w", jobID, err)
	}
	return nil
}
