package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/massgov/bulk-user-import/shared/clock"
	"github.com/massgov/bulk-user-import/shared/events"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/results"
)

// DefaultEventLease is how long a claim on a job's completion event holds:
// an announcer that died or stalled is taken over after it. A publish is
// given half of it.
const DefaultEventLease = time.Minute

// ResultsPatience is how many failed writes of a completion's result files
// the event waits for: it carries the files' locations when they are
// written, and is published without them after that many failures.
const ResultsPatience = 3

// Event outcomes recorded on the job.
const (
	EventSent    = "sent"
	EventSkipped = "skipped"
)

// EventOutcome is what PublishEvent did.
type EventOutcome int

// Outcomes of PublishEvent.
const (
	EventNothing    EventOutcome = iota // no event was due (or its claim is another's)
	EventPublished                      // published and recorded
	EventSkippedOut                     // no destination: recorded as skipped
	EventFailed                         // the publish failed; retried after a backoff
	EventReleased                       // not published now (stopping, the job was reopened or completed again): claim released
)

// eventClaim is an announcer's hold on a job's completion event.
type eventClaim struct {
	job                  string
	completion, failures int
	token                string
	// delivered: the destinations that have this completion's event
	// already (a retry skips them); deadline: when the claim may be taken
	// over, by this process's clock read before claiming.
	delivered []string
	deadline  time.Time
}

// partialPublisher publishes to the destinations not done yet and says
// which have the event (events.Multi).
type partialPublisher interface {
	PublishTo(ctx context.Context, e events.Event, done []string) ([]string, error)
}

// PublishEvent announces the completion of one job whose event is due:
// its latest completion is not announced yet, its result files are
// handled (or failed ResultsPatience times), no live claim is held on it,
// and a failed publish's backoff has passed. It claims the job (FOR UPDATE
// SKIP LOCKED: concurrent announcers take different jobs), reads the job
// and publishes outside any transaction, then records the outcome only if
// its claim's token is still the job's (an announcer that stalled past its
// lease and was taken over records nothing). Publishing is at least once:
// a publish that succeeded but could not be recorded is published again;
// consumers dedupe by event id. Without a publisher (l.Events nil) the
// event is recorded as skipped. It returns the job and the outcome.
func (l *Lifecycle) PublishEvent(ctx context.Context) (string, EventOutcome, error) {
	c, err := l.claimEvent(ctx)
	if err != nil || c == nil {
		return "", EventNothing, err
	}
	log := l.log.With("job", c.job, "completion", c.completion, "event_id", events.ID(c.job, c.completion))
	out, perr := l.announce(ctx, c)
	out, err = l.recordEvent(ctx, c, out, perr, log)
	return c.job, out, err
}

// announce builds and publishes the claimed event: the outcome to record,
// and the publish's error.
func (l *Lifecycle) announce(ctx context.Context, c *eventClaim) (EventOutcome, error) {
	e, ok, err := l.buildEvent(ctx, c)
	switch {
	case err != nil && ctx.Err() != nil:
		return EventReleased, err
	case err != nil:
		return EventFailed, err // the job could not be read: retried like a publish
	case !ok:
		return EventReleased, nil
	case l.Events == nil:
		return EventSkippedOut, nil
	}
	// A claim that may be taken over before the publish ends is not used:
	// an announcer delayed (stopped, starved) between its claim and here
	// would publish what its successor publishes too. The publish ends
	// before the claim can be taken over.
	remaining := c.deadline.Sub(clock.OrReal(l.Clock).Now())
	if remaining < l.EventLease/2 {
		return EventReleased, errClaimRunningOut
	}
	pctx, cancel := context.WithTimeout(ctx, min(l.EventLease/2, remaining))
	var perr error
	if pp, ok := l.Events.(partialPublisher); ok {
		c.delivered, perr = pp.PublishTo(pctx, e, c.delivered)
	} else {
		perr = l.Events.Publish(pctx, e)
	}
	cancel()
	switch {
	case perr == nil:
		return EventPublished, nil
	case ctx.Err() != nil:
		return EventReleased, perr
	}
	return EventFailed, perr
}

// claimEvent claims the first due event; nil when none is.
func (l *Lifecycle) claimEvent(ctx context.Context) (*eventClaim, error) {
	c := &eventClaim{token: newToken(), deadline: clock.OrReal(l.Clock).Now().Add(l.EventLease)}
	err := l.pool.QueryRow(ctx, `UPDATE bulk_import_job SET event_claim = $1, event_claimed_at = now()
		WHERE job_id = (SELECT job_id FROM bulk_import_job
		                WHERE event_sent < completion AND finished_at IS NOT NULL
		                  AND (results_written >= completion OR results_failures >= $3)
		                  AND (event_claimed_at IS NULL OR event_claimed_at < now() - $2 * interval '1 second')
		                  AND (event_retry_at IS NULL OR event_retry_at <= now())
		                ORDER BY finished_at LIMIT 1 FOR UPDATE SKIP LOCKED)
		  -- Again on the row as locked: what the subquery read may be an
		  -- older version (another announcer's claim or record committed
		  -- meanwhile), and a partial index's predicate is not rechecked.
		  AND event_sent < completion AND finished_at IS NOT NULL
		  AND (event_claimed_at IS NULL OR event_claimed_at < now() - $2 * interval '1 second')
		RETURNING job_id, completion, event_failures,
		          CASE WHEN event_delivered_for = completion THEN event_delivered ELSE '{}' END`,
		c.token, l.EventLease.Seconds(), ResultsPatience).
		Scan(&c.job, &c.completion, &c.failures, &c.delivered)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("claim a completion event: %w", err)
	}
	return c, nil
}

// buildEvent reads the claimed completion's event; false when the job is
// no longer at that completion (reopened by a replay, or completed again:
// the latest completion is the one announced).
func (l *Lifecycle) buildEvent(ctx context.Context, c *eventClaim) (events.Event, bool, error) {
	st, err := l.jobs.Status(ctx, c.job)
	if err != nil {
		return events.Event{}, false, err
	}
	if st.Completion != c.completion || !st.Done {
		return events.Event{}, false, nil
	}
	d, err := l.jobs.Details(ctx, c.job)
	if err != nil {
		return events.Event{}, false, err
	}
	var started *time.Time
	if err := l.pool.QueryRow(ctx, `SELECT min(recorded_at) FROM bulk_import_source WHERE job_id = $1`, c.job).Scan(&started); err != nil {
		return events.Event{}, false, fmt.Errorf("read the start of job %s: %w", c.job, err)
	}
	typ, state := events.TypeOf(st.CancelledAt != nil)
	e := events.Event{
		Version: events.Version, EventID: events.ID(c.job, c.completion), Type: typ, Job: c.job, Completion: c.completion, State: state,
		Counts: events.Counts{Total: st.Total, Succeeded: st.Succeeded, Failed: st.Failed, Rejected: st.Rejected,
			Duplicate: st.Duplicate, Cancelled: st.Cancelled},
		FailuresByCode: d.FailuresByCode,
		Results:        events.Results{State: eventResults(st.Results)},
		CreatedAt:      st.CreatedAt, StartedAt: started, FinishedAt: st.FinishedAt,
	}
	if st.CancelledAt != nil {
		e.CancelReason = events.Reason(st.CancelReason)
	}
	if st.Results == jobs.ResultsWritten {
		for _, f := range []string{results.FileSucceeded, results.FileFailed} {
			e.Results.Files = append(e.Results.Files, st.ResultsLocation+f)
		}
	}
	return e, true, nil
}

// eventResults is the state of the result files as the event tells it.
func eventResults(s string) string {
	if s == jobs.ResultsRetrying {
		return "failed"
	}
	return s
}

// recordEvent records the outcome under the claim (a no-op when the claim
// is another's now) and releases the claim.
func (l *Lifecycle) recordEvent(ctx context.Context, c *eventClaim, out EventOutcome, perr error, log *slog.Logger) (EventOutcome, error) {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
	defer cancel()
	const mine = `event_claim = NULL, event_claimed_at = NULL WHERE job_id = $1 AND event_claim = $2`
	var sql string
	args := []any{c.job, c.token}
	delay := l.eventRetryDelay(c.failures, perr)
	switch out {
	case EventPublished, EventSkippedOut:
		outcome := EventSent
		if out == EventSkippedOut {
			outcome = EventSkipped
		}
		// The error fields are the latest completion's: an older one's
		// outcome (the job completed again meanwhile) leaves them.
		sql = `UPDATE bulk_import_job SET event_sent = greatest(event_sent, $3), event_sent_at = now(), event_outcome = $4,
			event_error = CASE WHEN completion = $3 THEN NULL ELSE event_error END,
			event_failures = CASE WHEN completion = $3 THEN 0 ELSE event_failures END,
			event_retry_at = CASE WHEN completion = $3 THEN NULL ELSE event_retry_at END, ` + mine
		args = append(args, c.completion, outcome)
	case EventFailed:
		// Only while the job is still at the claimed completion: a new
		// completion's event is due at once, whatever the old one met.
		sql = `UPDATE bulk_import_job SET
			event_error = CASE WHEN completion = $5 THEN $3 ELSE event_error END,
			event_failures = CASE WHEN completion = $5 THEN event_failures + 1 ELSE event_failures END,
			event_retry_at = CASE WHEN completion = $5 THEN now() + $4 * interval '1 second' ELSE event_retry_at END,
			event_delivered = CASE WHEN completion = $5 THEN coalesce($6::text[], '{}') ELSE event_delivered END,
			event_delivered_for = CASE WHEN completion = $5 THEN $5 ELSE event_delivered_for END, ` + mine
		args = append(args, boundError(perr.Error()), delay.Seconds(), c.completion, c.delivered)
	default:
		sql = `UPDATE bulk_import_job SET ` + mine
	}
	tag, err := l.pool.Exec(bctx, sql, args...)
	if err != nil {
		return out, fmt.Errorf("record the completion event of job %s: %w", c.job, err)
	}
	if tag.RowsAffected() == 0 {
		log.Warn("completion event: the claim was taken over by another announcer (this one was delayed past it); its outcome stands", "err", perr)
		return EventReleased, nil
	}
	switch out {
	case EventPublished:
		log.Info("completion event published", "destination", l.Events.Destination())
	case EventSkippedOut:
		log.Info("completion event skipped: no destination configured (--completion-sns-topic, --completion-event-bus)")
	case EventFailed:
		log.Error("could not publish the completion event; will retry", "err", perr, "failures", c.failures+1,
			"permanent", events.IsPermanent(perr), "retry_in", delay.String())
	case EventReleased:
		log.Info("completion event not published now: the job was reopened or completed again, this worker is stopping, or its claim was running out", "err", perr)
	}
	return out, nil
}

// eventRetryDelay is the wait after a failed publish: RetryBase, doubling,
// at most RetryMax; a permanent error waits RetryMax at once.
func (l *Lifecycle) eventRetryDelay(failures int, err error) time.Duration {
	if events.IsPermanent(err) {
		return l.RetryMax
	}
	return l.retryDelay(failures)
}

// errClaimRunningOut: the claim could be taken over before a publish ends.
var errClaimRunningOut = errors.New("the claim on the event could be taken over before a publish ends: released")

// boundError bounds an error text kept on the job.
func boundError(s string) string {
	const max = 1000
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
