// Package lifecycle is the one owner of a job's state and of its rows'
// outcomes: every write that moves a job or a row from one state to
// another is here, and the rest of the code (the splitter, the workers'
// handlers, the maintainer, the operators' commands) calls it. Package
// jobs reads; this package writes.
//
// The rule that keeps concurrent processes from tearing a job apart: every
// transition locks the job's row first.
//
//   - Job transitions (create, record a source, mark recorded or sent,
//     complete, reopen, cancel, enforce the failure limits, requeue on
//     replay, purge, prune, claim and record the result files) take the
//     row's exclusive lock (FOR UPDATE), check the job's state under it,
//     and only then change the job or its rows.
//   - Row outcomes that can bear on the job (a row succeeded, which may
//     reopen a finished job; a row failed for good; a row re-sent) take
//     the job row's shared key lock (FOR KEY SHARE) first: they never
//     wait for one another, and a job transition waits for the
//     ones in flight, and they for it. So a completion sees every row
//     outcome committed before it, and none slips in between its check
//     and its write.
//   - Bookkeeping that moves no state (an attempt counted, a transient
//     error noted, a dead letter recorded as sent, a paused row touched)
//     locks nothing but its row.
//
// A splitter run holds the job's run lock (jobs.Store.Lock, a session
// lock that dies with the process) from start to end; a completion is
// not recorded while it is held, so none comes between the reading of a
// source and the commit of its rows.
//
// Result files are claimed with a token and the claim's time: the claim is
// renewed while the files are written, checked by the writer's clock
// before each file, and every outcome is recorded only if token and time
// still hold; a writer delayed past its claim neither writes nor records
// over a newer one (but for a freeze between that check and an upload).
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/shared/clock"
	"github.com/massgov/bulk-user-import/shared/events"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/mask"
	"github.com/massgov/bulk-user-import/shared/results"
)

// Defaults.
const (
	// DefaultClaimLease is how long a claim on a job's result files holds
	// without renewal: a writer that died (or stalled) is taken over after
	// it. A live writer renews it every third of it.
	DefaultClaimLease = 5 * time.Minute
	// DefaultRetryBase and DefaultRetryMax space the retries of a failed
	// write: base, then doubling, up to max.
	DefaultRetryBase = 5 * time.Second
	DefaultRetryMax  = 10 * time.Minute
)

// bookkeepingTimeout bounds a write that must happen even while the
// process is stopping (a claim's outcome, a send recorded).
const bookkeepingTimeout = 5 * time.Second

// Lifecycle runs the transitions of the jobs on the database of pool.
type Lifecycle struct {
	pool    *pgxpool.Pool
	jobs    *jobs.Store
	results *results.Publisher
	log     *slog.Logger
	// ClaimLease, RetryBase and RetryMax: see the defaults.
	ClaimLease, RetryBase, RetryMax time.Duration
	// Events publishes the completion events (nil: none is configured,
	// events are recorded as skipped); EventLease is the claim's lease on
	// one (DefaultEventLease).
	Events     events.Publisher
	EventLease time.Duration
	// Clock times the result files' claims (nil: the system clock).
	Clock clock.Clock
}

// New returns the lifecycle of the jobs on pool, writing result files with
// publisher (nil when the caller writes none).
func New(pool *pgxpool.Pool, publisher *results.Publisher, log *slog.Logger) *Lifecycle {
	return &Lifecycle{pool: pool, jobs: jobs.NewStore(pool), results: publisher, log: log,
		ClaimLease: DefaultClaimLease, RetryBase: DefaultRetryBase, RetryMax: DefaultRetryMax, EventLease: DefaultEventLease}
}

// Jobs returns the reads of the same database.
func (l *Lifecycle) Jobs() *jobs.Store { return l.jobs }

// Pruned reports whether the job exists and its row data was deleted by
// retention (jobs.Store.Pruned).
func (l *Lifecycle) Pruned(ctx context.Context, jobID string) (bool, error) {
	return l.jobs.Pruned(ctx, jobID)
}

// ErrFinished says a job's completion is recorded: there is nothing left
// to cancel. (The transitions' other errors are package jobs'.)
var ErrFinished = errors.New("job is finished: every row is final")

// state is what a transition reads of its job under the job's lock.
type state struct {
	finished, cancelled, pruned, recorded bool
	force                                 bool
	cancelReason                          string
}

// lockMode is how a transition locks the job's row.
type lockMode string

const (
	exclusive lockMode = "FOR UPDATE"    // job transitions
	keyShare  lockMode = "FOR KEY SHARE" // row outcomes
)

// lockJob locks the job's row for the rest of tx and reads its state;
// jobs.ErrJobNotFound when there is none.
func lockJob(ctx context.Context, tx pgx.Tx, jobID string, mode lockMode) (state, error) {
	var s state
	err := tx.QueryRow(ctx, `SELECT finished_at IS NOT NULL, cancelled_at IS NOT NULL, pruned_at IS NOT NULL,
		recorded_at IS NOT NULL, force_registration, coalesce(cancel_reason, '')
		FROM bulk_import_job WHERE job_id = $1 `+string(mode), jobID).
		Scan(&s.finished, &s.cancelled, &s.pruned, &s.recorded, &s.force, &s.cancelReason)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, fmt.Errorf("job %s: %w", jobID, jobs.ErrJobNotFound)
	}
	if err != nil {
		return s, fmt.Errorf("lock job %s: %w", jobID, err)
	}
	return s, nil
}

// queueLock queues, into a batch, the job row's lock in mode: the batch's
// later statements run under it (a batch is one implicit transaction).
func queueLock(b *pgx.Batch, jobID string, mode lockMode) {
	b.Queue(`SELECT 1 FROM bulk_import_job WHERE job_id = $1 `+string(mode), jobID)
}

// transition runs fn in a transaction that has locked the job's row
// exclusively and read its state.
func (l *Lifecycle) transition(ctx context.Context, jobID string, fn func(tx pgx.Tx, s state) error) error {
	return pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		s, err := lockJob(ctx, tx, jobID, exclusive)
		if err != nil {
			return err
		}
		return fn(tx, s)
	})
}

// refuse returns the error of a job that may not take new work: cancelled
// or pruned.
func refuse(jobID string, s state) error {
	switch {
	case s.cancelled:
		return fmt.Errorf("job %s: %w (%s)", jobID, jobs.ErrCancelled, mask.Text(s.cancelReason))
	case s.pruned:
		return fmt.Errorf("job %s: %w", jobID, jobs.ErrPruned)
	}
	return nil
}
