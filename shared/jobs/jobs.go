// Package jobs keeps the import's bookkeeping in PostgreSQL: one row per
// job, per source file and per CSV data row, and each row's state. Every row
// ends in exactly one final state: succeeded, failed (with a code and a
// message), rejected (with its line) or duplicate (of an earlier row).
package jobs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/shared/mask"
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
	Event             Event
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

// Event says what became of the completion events of the job.
type Event struct {
	Sent     int        // the completion last announced
	SentAt   *time.Time // when
	Outcome  string     // "sent", or "skipped" (no destination configured)
	Failures int        // failed publishes of the current completion's event
	RetryAt  *time.Time // when the next is tried
	Error    string     // why the last publish failed
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

// runLockKey is the advisory lock key of a job's runs, the job id as $1.
const runLockKey = `hashtextextended('bulk_import_job:' || $1, 0)`

// Lock takes the job's exclusive run lock for the duration of a splitter
// run or a re-send, so two processes never send the same job's rows at
// once (two runs with the same --job cannot interleave), and no completion
// is recorded while a run may still add rows (RunHeld). It returns
// ErrJobBusy at once if another process holds it. The lock dies with the
// connection, so a crashed splitter never leaves it behind; unlock may
// be called more than once.
func (s *Store) Lock(ctx context.Context, jobID string) (unlock func(), err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock job %s: %w", jobID, err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(`+runLockKey+`)`, jobID).Scan(&ok); err != nil {
		conn.Release()
		return nil, fmt.Errorf("lock job %s: %w", jobID, err)
	}
	if !ok {
		conn.Release()
		return nil, fmt.Errorf("job %s: %w", jobID, ErrJobBusy)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, _ = conn.Exec(ctx, `SELECT pg_advisory_unlock(`+runLockKey+`)`, jobID)
			conn.Release()
		})
	}, nil
}

// RunHeld reports, through q (a pool or a transaction), whether a process
// holds the job's run lock now (Lock): a splitter run that may still add
// rows, or a re-send. It reads the lock table and takes nothing, so it
// never makes a splitter that starts meanwhile find the job busy.
func (s *Store) RunHeld(ctx context.Context, q Querier, jobID string) (bool, error) {
	rows, err := q.Query(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks l, (SELECT `+runLockKey+` AS k) key
		WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND l.classid = ((key.k >> 32) & 4294967295)::bigint::oid AND l.objid = (key.k & 4294967295)::bigint::oid AND l.objsubid = 1 AND l.granted)`, jobID)
	if err != nil {
		return false, fmt.Errorf("read the run lock of job %s: %w", jobID, err)
	}
	held, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[bool])
	if err != nil {
		return false, fmt.Errorf("read the run lock of job %s: %w", jobID, err)
	}
	return held, nil
}

// Job returns the job with that id, or ErrJobNotFound.
func (s *Store) Job(ctx context.Context, id string) (Job, error) {
	var j Job
	var maxFailures *int
	var maxRatio *float64
	err := s.pool.QueryRow(ctx, `SELECT job_id, force_registration, created_at, recorded_at, sent_at, finished_at,
		cancelled_at, coalesce(cancel_reason, ''), max_failures, max_failure_ratio, min_sample, completion,
		results_written, results_written_at, coalesce(results_location, ''), coalesce(results_error, ''), results_failures, pruned_at,
		event_sent, event_sent_at, coalesce(event_outcome, ''), event_failures, event_retry_at, coalesce(event_error, '')
		FROM bulk_import_job WHERE job_id = $1`, id).
		Scan(&j.ID, &j.ForceRegistration, &j.CreatedAt, &j.RecordedAt, &j.SentAt, &j.FinishedAt,
			&j.CancelledAt, &j.CancelReason, &maxFailures, &maxRatio, &j.Limits.MinSample, &j.Completion,
			&j.Results.Written, &j.Results.WrittenAt, &j.Results.Location, &j.Results.Error, &j.Results.Failures, &j.PrunedAt,
			&j.Event.Sent, &j.Event.SentAt, &j.Event.Outcome, &j.Event.Failures, &j.Event.RetryAt, &j.Event.Error)
	// The reason is an operator's text: shown everywhere, so masked here,
	// once, for every reader (reasons recorded before masking included).
	j.CancelReason = mask.Text(j.CancelReason)
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

// SourceCounts says what recording a source found.
type SourceCounts struct {
	Rows       int64 // data rows read (blank lines aside)
	Accepted   int64 // rows to register
	Rejected   int64 // rows refused by validation
	Duplicates int64 // rows repeating an (email, fein) pair of the job
}
