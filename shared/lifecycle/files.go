package lifecycle

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/massgov/bulk-user-import/shared/clock"
	"github.com/massgov/bulk-user-import/shared/results"
	"github.com/massgov/bulk-user-import/shared/retry"
)

// Outcome of WriteResults.
type Outcome int

// Outcomes.
const (
	Nothing    Outcome = iota // no result files were due (or the claim is another's)
	Written                   // written
	NotWritten                // handled without writing: there is nowhere to write them
	Failed                    // the write failed; it is retried after a backoff
	// Released: not written now (the process is stopping, a replay reopened
	// the job, or the claim was lost to another writer); the claim, if
	// still this writer's, was released.
	Released
)

// Why a claim's writing stopped.
var (
	errClaimLost    = errors.New("another writer took the claim on the result files")
	errClaimExpired = errors.New("the claim on the result files ran out before it could be renewed")
)

// claim is a writer's hold on a job's result files: a token in the job's
// row, and the time the claim was taken or last renewed there (a writer of
// an earlier version, which knows no token, changes that time when it
// takes the claim over), valid (by this process's clock, counted from
// before the statement that took or renewed it) for the lease.
type claim struct {
	job                  string
	completion, failures int
	token                string
	clk                  clock.Clock

	mu         sync.Mutex
	renewedAt  time.Time // results_claimed_at as this writer last set it (database time)
	validUntil time.Time
	expiry     clock.Timer
}

// held returns an error when the claim cannot be trusted any more: its
// lease has run out by this process's clock. It reads the clock itself,
// rather than waiting for the expiry to cancel the writing, so that a
// process that was frozen past its claim learns so before its next write.
func (c *claim) held() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.clk.Now().Before(c.validUntil) {
		return errClaimExpired
	}
	return nil
}

// WriteResults claims the result files of one job that are due (jobID's,
// or any job's when jobID is empty), writes them and records the outcome.
// Files are due when the job's latest completion's files are not written,
// no live claim is held on them and, for any job, a failed write's backoff
// has passed. While the files are written the claim is renewed every third
// of the lease; the writing stops as soon as the claim is lost or runs out
// unrenewed (a stalled process), the claim is checked by this process's
// clock right before each file is put, and every outcome is recorded only
// while the claim is this writer's: a writer delayed past its claim does
// not write over, nor record over, the files of the writer that took it
// over (but for a freeze between that check and the upload itself). It
// returns the job handled and the outcome; the error is for the claim and
// its bookkeeping (a failed write is an outcome, logged here).
func (l *Lifecycle) WriteResults(ctx context.Context, jobID string) (string, Outcome, error) {
	c, err := l.claimResults(ctx, jobID)
	if err != nil || c == nil {
		return "", Nothing, err
	}
	log := l.log.With("job", c.job, "completion", c.completion)
	location, werr, cause := l.writeClaimed(ctx, c, log)
	out, err := l.recordResults(ctx, c, location, werr, cause, log)
	if err != nil {
		return c.job, out, fmt.Errorf("record the result files of job %s: %w", c.job, err)
	}
	return c.job, out, nil
}

// claimResults claims the due files of jobID (any job's when empty); nil
// when none are due.
func (l *Lifecycle) claimResults(ctx context.Context, jobID string) (*claim, error) {
	clk := clock.OrReal(l.Clock)
	c := &claim{token: newToken(), clk: clk}
	// Any job's: the first due one that nobody holds locked (a row outcome
	// in flight holds its key share). One job's, for a command that ended
	// it: wait for such a lock, a moment, rather than skip its files.
	lock := "FOR UPDATE SKIP LOCKED"
	if jobID != "" {
		lock = "FOR UPDATE"
	}
	start := clk.Now()
	err := l.pool.QueryRow(ctx, `UPDATE bulk_import_job SET results_claimed_at = now(), results_claim = $3
		WHERE job_id = (SELECT job_id FROM bulk_import_job
		                WHERE finished_at IS NOT NULL AND results_written < completion
		                  AND ($1 = '' OR job_id = $1)
		                  AND (results_claimed_at IS NULL OR results_claimed_at < now() - $2 * interval '1 second')
		                  AND ($1 <> '' OR results_retry_at IS NULL OR results_retry_at <= now())
		                ORDER BY finished_at LIMIT 1 `+lock+`)
		  -- Again on the row as locked, as the event claim does (belt and
		  -- braces: PostgreSQL rechecks the subquery's conditions on the
		  -- version a waiting FOR UPDATE finds; this states them here too).
		  AND finished_at IS NOT NULL AND results_written < completion
		  AND (results_claimed_at IS NULL OR results_claimed_at < now() - $2 * interval '1 second')
		RETURNING job_id, completion, results_failures, results_claimed_at`, jobID, l.ClaimLease.Seconds(), c.token).
		Scan(&c.job, &c.completion, &c.failures, &c.renewedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("claim result files: %w", err)
	}
	c.validUntil = start.Add(l.ClaimLease)
	return c, nil
}

// writeClaimed writes the files under the claim: on a context that ends
// when the claim is lost or runs out, renewing it meanwhile. cause says
// why the writing was stopped by the claim (nil: it was not).
func (l *Lifecycle) writeClaimed(ctx context.Context, c *claim, log *slog.Logger) (location string, werr, cause error) {
	clk := clock.OrReal(l.Clock)
	wctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	expire := func() { stop(errClaimExpired) }
	c.mu.Lock()
	c.expiry = clock.AfterFunc(clk, c.validUntil.Sub(clk.Now()), expire)
	c.mu.Unlock()
	renewing := make(chan struct{})
	go func() {
		defer close(renewing)
		l.renew(wctx, c, func() { stop(errClaimLost) }, expire, log)
	}()
	location, werr = l.results.Write(wctx, c.job, c.held)
	cause = context.Cause(wctx)
	switch {
	case errors.Is(cause, errClaimLost), errors.Is(cause, errClaimExpired):
	case errors.Is(werr, errClaimExpired): // found by the check before a file, ahead of the expiry
		cause = errClaimExpired
	default:
		cause = nil
	}
	stop(nil)
	<-renewing
	c.mu.Lock()
	c.expiry.Stop()
	c.mu.Unlock()
	return location, werr, cause
}

// renew renews the claim every third of the lease until ctx ends, moving
// its expiry (which calls expire) on; lost is called when the claim is
// found to be another's.
func (l *Lifecycle) renew(ctx context.Context, c *claim, lost, expire func(), log *slog.Logger) {
	clk := clock.OrReal(l.Clock)
	for {
		if clock.Sleep(ctx, clk, l.ClaimLease/3) != nil {
			return
		}
		start := clk.Now()
		c.mu.Lock()
		at := c.renewedAt
		c.mu.Unlock()
		// Not cancelled half-way when the writing ends: a renewal that
		// commits must be known, since the outcome is recorded against the
		// time it set.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.ClaimLease/3)
		var renewed time.Time
		err := l.pool.QueryRow(rctx, `UPDATE bulk_import_job SET results_claimed_at = now()
			WHERE job_id = $1 AND results_claim = $2 AND results_claimed_at = $3 RETURNING results_claimed_at`, c.job, c.token, at).Scan(&renewed)
		cancel()
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			lost()
			return
		case err != nil:
			// Unknown: the claim holds until it runs out unrenewed.
			if ctx.Err() == nil {
				log.Warn("could not renew the claim on the result files; retrying", "err", err)
			}
		default:
			c.mu.Lock()
			c.renewedAt = renewed
			c.validUntil = start.Add(l.ClaimLease)
			if c.expiry.Stop() { // else it ran out already: the writing stops
				c.expiry = clock.AfterFunc(clk, c.validUntil.Sub(clk.Now()), expire)
			}
			c.mu.Unlock()
		}
	}
}

// recordResults records the outcome of a write, if the claim is still
// this writer's, and releases the claim.
func (l *Lifecycle) recordResults(ctx context.Context, c *claim, location string, werr, cause error, log *slog.Logger) (Outcome, error) {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
	defer cancel()
	// Every outcome releases the claim, and is recorded only while the
	// claim is this writer's: its token, as last renewed.
	const mine = `results_claim = NULL, results_claimed_at = NULL WHERE job_id = $1 AND results_claim = $2 AND results_claimed_at = $3`
	var out Outcome
	var sql string
	var args []any
	switch {
	case cause != nil:
		out, sql = Released, `UPDATE bulk_import_job SET `+mine
	case werr == nil:
		out = Written
		sql = `UPDATE bulk_import_job SET results_written = greatest(results_written, $4), results_written_at = now(),
			results_location = $5, results_error = NULL, results_failures = 0, results_retry_at = NULL, ` + mine
		args = []any{c.completion, location}
	case errors.Is(werr, results.ErrNoBucket):
		out = NotWritten
		sql = `UPDATE bulk_import_job SET results_written = greatest(results_written, $4), results_written_at = now(),
			results_location = NULL, results_error = $5, results_failures = 0, results_retry_at = NULL, ` + mine
		args = []any{c.completion, werr.Error()}
	case ctx.Err() != nil || errors.Is(werr, results.ErrQueuedAgain):
		out, sql = Released, `UPDATE bulk_import_job SET `+mine
	default:
		out = Failed
		sql = `UPDATE bulk_import_job SET results_error = $4, results_failures = results_failures + 1,
			results_retry_at = now() + $5 * interval '1 second', ` + mine
		args = []any{werr.Error(), l.retryDelay(c.failures).Seconds()}
	}
	c.mu.Lock()
	at := c.renewedAt
	c.mu.Unlock()
	tag, err := l.pool.Exec(bctx, sql, append([]any{c.job, c.token, at}, args...)...)
	if err != nil {
		return out, err
	}
	if tag.RowsAffected() == 0 {
		// Another writer holds the claim now: its outcome is the one that
		// counts. Whatever this writer wrote, it wrote while its claim held.
		log.Warn("result files: the claim was taken over by another writer (this one was delayed past it); its outcome stands", "err", werr)
		return Released, nil
	}
	switch out {
	case Written:
		log.Info("result files written", "location", location)
	case NotWritten:
		log.Warn("result files not written: " + werr.Error() + "; `splitter report " + c.job + " --out DIR` writes them locally")
	case Released:
		switch {
		case cause != nil:
			log.Warn("result files not written: "+cause.Error()+"; the next claim writes them", "err", werr)
		case ctx.Err() != nil:
			log.Info("stopping: result files not written; another worker's maintainer writes them", "err", werr)
		default:
			log.Info("result files not written: a replay reopened the job; its next completion writes them")
		}
	case Failed:
		log.Error("could not write the result files; will retry", "err", werr, "failures", c.failures+1, "retry_in", l.retryDelay(c.failures).String())
	}
	return out, nil
}

// retryDelay is the wait after the failures-th failed write plus one:
// RetryBase, doubling, at most RetryMax.
func (l *Lifecycle) retryDelay(failures int) time.Duration {
	return retry.Schedule{Initial: l.RetryBase, Max: l.RetryMax}.Nth(failures + 1)
}

// newToken names a claim.
func newToken() string {
	b := make([]byte, 12)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}
