// Package consume is the worker's side of the queue: Handler turns one SQS
// message into one outcome (acknowledge, retry later, or release), doing the
// registration and the row's bookkeeping; Worker receives messages, runs
// handlers concurrently and acknowledges in batches.
package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/massgov/bulk-user-import/shared/breaker"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/mask"
	"github.com/massgov/bulk-user-import/shared/message"
	"github.com/massgov/bulk-user-import/shared/metrics"
	"github.com/massgov/bulk-user-import/shared/queue"
	"github.com/massgov/bulk-user-import/shared/register"
	"github.com/massgov/bulk-user-import/shared/retry"
	"github.com/massgov/bulk-user-import/shared/textbound"
)

// Steps of a message that are not registration steps, as they appear in logs.
const (
	StepCheck = "check" // decoding the message and checking it against its row
	StepDone  = "done"  // recording the row's success
)

// maxErrorMessage bounds an error message stored or sent as an attribute.
const maxErrorMessage = 1000

// Action is what the worker loop does with a message after its handler.
type Action int

// Actions.
const (
	// Ack deletes the message: its row is final (or it never will be).
	Ack Action = iota
	// Retry leaves the message to reappear after Outcome.Delay; the
	// attempt counts towards the queue's maxReceiveCount.
	Retry
	// Release hands the message back, visible after Outcome.Delay (0: at
	// once), without using up an attempt: the worker is stopping, or a
	// dependency's breaker is open. A message whose next receive would be
	// its last attempt is replaced by a fresh copy.
	Release
)

func (a Action) String() string {
	switch a {
	case Ack:
		return "ack"
	case Retry:
		return "retry"
	default:
		return "release"
	}
}

// Result is what became of a message, for the counters.
type Result int

// Results.
const (
	Succeeded Result = iota // the row was registered
	Failed                  // the row failed for good: sent to the dead-letter queue
	Skipped                 // the row was final already: the message is dropped
	Retried                 // a transient failure: tried again later
	Released                // the worker is stopping: handed back untouched
	Paused                  // a dependency's breaker is open: handed back untouched
)

func (r Result) String() string {
	switch r {
	case Succeeded:
		return "succeeded"
	case Failed:
		return "failed"
	case Skipped:
		return "skipped"
	case Retried:
		return "retried"
	case Released:
		return "released"
	default:
		return "paused"
	}
}

// Outcome of one message: what to do with it, and what became of it.
type Outcome struct {
	Action Action
	Delay  time.Duration // for Retry and Release
	Result Result
}

// Backoff is the schedule of retry delays across attempts: the n-th retry
// waits a random time between half and all of min(Base * 2^(n-1), Max).
type Backoff struct {
	Base time.Duration
	Max  time.Duration
}

// Validate names bad fields. Delays are visibility timeouts, which SQS
// bounds to 12 hours.
func (b Backoff) Validate() error {
	if b.Base < 0 || b.Max < b.Base || b.Max > 12*time.Hour {
		return fmt.Errorf("retry schedule base %s, max %s: want 0 <= base <= max <= 12h", b.Base, b.Max)
	}
	return nil
}

// Delay returns the wait before the attempt after the receiveCount-th.
func (b Backoff) Delay(receiveCount int) time.Duration {
	// A retry.Schedule jitters around each step (±Jitter): steps of three
	// quarters of b's, ±1/3, span half to all of b's. Base and Max are
	// taken in whole multiples of 4 ns, so that the bounds are exact.
	s := retry.Schedule{Initial: b.Base / 4 * 3, Max: b.Max / 4 * 3, Jitter: 1.0 / 3}
	return s.Nth(receiveCount)
}

// DeadLetterer sends a message to the dead-letter queue.
type DeadLetterer interface {
	Send(ctx context.Context, e queue.Entry) error
}

// Rows is the bookkeeping of a row's outcome that the handler writes
// itself (the registration writes a success); *lifecycle.Lifecycle is one.
type Rows interface {
	ClaimFailure(ctx context.Context, jobID string, row int64, code, reason string) (bool, error)
	DeadLettered(ctx context.Context, jobID string, row int64) error
	NoteError(ctx context.Context, jobID string, row int64, code, reason string) error
	Touch(ctx context.Context, jobID string, row int64, every time.Duration) error
}

var _ Rows = (*lifecycle.Lifecycle)(nil)

// Handler handles one message.
type Handler struct {
	Rows            Rows
	Registrar       *register.Registrar
	DLQ             DeadLetterer
	MaxReceiveCount int // the queue's; the attempt that reaches it is the last
	Backoff         Backoff
	Log             *slog.Logger
	Now             func() time.Time
	Metrics         *metrics.Worker // optional: counts failures by code
	// Breakers pause the rows that need a dependency that refuses the
	// pipeline (nil: nothing is ever paused; such errors are retried).
	Breakers *breaker.Set
	// TouchEvery is how often, at most, a paused row records a sign of
	// life, so that the maintainer does not take its message for lost: a
	// fraction of the maintainer's recover-after (default a minute).
	TouchEvery time.Duration
}

func (h *Handler) countError(code string) {
	if h.Metrics != nil {
		h.Metrics.Error(code)
	}
}

// bookkeepingTimeout bounds the writes that must happen even while the
// worker is stopping.
const bookkeepingTimeout = 10 * time.Second

// claimSettles is how long a claimed failure's dead letter may take to be
// sent (the send and its record, each within bookkeepingTimeout): a
// pending dead letter older than this was left by a worker that died.
const claimSettles = 3 * bookkeepingTimeout

// needs returns the dependencies a row's registration calls.
func needs(forceRegistration bool) []breaker.Dependency {
	if forceRegistration {
		return []breaker.Dependency{breaker.Database, breaker.Cognito, breaker.Fineos}
	}
	return []breaker.Dependency{breaker.Database, breaker.Cognito}
}

// Handle processes m and says what to do with it. It never panics on bad
// input and never loses a row: every path ends in an acknowledged final
// state, a dead-lettered message, or a message left for another attempt.
// It records its row's outcome and nothing else: the job as a whole (its
// completion, failure limits and result files) is the maintainer's. A row
// that needs a dependency whose breaker is open is handed back untouched;
// an error that says the pipeline, not the row, is at fault opens the
// dependency's breaker and hands the row back too: it never fails a row.
func (h *Handler) Handle(ctx context.Context, m queue.Message) Outcome {
	log := h.Log.With("message_id", m.ID, "attempt", m.ReceiveCount)
	msg, err := message.Decode(m.Body)
	if err != nil {
		return h.deadLetter(ctx, log.With("step", StepCheck, "error_code", message.CodeMalformedMessage), m, nil, message.CodeMalformedMessage, err.Error())
	}
	log = log.With("job", msg.Job, "row", msg.Row)
	if b := h.Breakers.Blocking(needs(msg.ForceRegistration)...); b != nil {
		return h.pause(ctx, log, msg, b)
	}

	res, err := h.Registrar.Register(ctx, log, register.Request{
		Email: msg.Email, FEIN: msg.FEIN, ForceRegistration: msg.ForceRegistration,
		Job: msg.Job, Row: msg.Row, ReceiveCount: m.ReceiveCount,
	})
	var final *register.RowFinalError
	switch {
	case err == nil:
		log.Info("row succeeded", "step", StepDone, logging.Email(msg.Email), logging.FEIN(msg.FEIN),
			"user_created", res.UserCreated, "fineos_registered", res.FineosRegistered)
		return Outcome{Action: Ack, Result: Succeeded}
	case errors.Is(err, jobs.ErrRowNotFound):
		return h.deadLetter(ctx, log.With("step", StepCheck, "error_code", message.CodeUnknownRow), m, &msg, message.CodeUnknownRow, err.Error())
	case errors.As(err, &final) && final.State == jobs.Failed && final.Row.DeadLetter == jobs.DeadLetterPending:
		if final.Row.FailedFor < claimSettles {
			// Another delivery claimed the failure a moment ago and is
			// sending the dead letter: look again later.
			return Outcome{Action: Release, Delay: claimSettles, Result: Paused}
		}
		// A worker claimed the row's failure and died before its dead
		// letter was surely sent: finish the send.
		log = log.With("step", StepCheck, "error_code", final.Row.ErrorCode)
		log.Warn("the row failed but its dead letter may not have been sent; sending it")
		return h.sendDeadLetter(ctx, log, m, &msg, final.Row.ErrorCode, rowReason(final.Row.ErrorMessage))
	case errors.As(err, &final):
		log.Info("row already final; message dropped", "step", StepCheck, "state", final.State)
		return Outcome{Action: Ack, Result: Skipped}
	case errors.Is(err, register.ErrMessageMismatch):
		return h.deadLetter(ctx, log.With("step", StepCheck, "error_code", message.CodeMessageMismatch), m, &msg, message.CodeMessageMismatch, err.Error())
	}
	var f *register.Failure
	if !errors.As(err, &f) {
		f = register.Classify("", err)
	}
	return h.failed(ctx, log.With("step", f.Step, "error_code", f.Code), m, &msg, f)
}

// failed handles a failed attempt: systemic failures open their breaker
// and hand the row back; permanent failures, and transient ones on the
// last allowed attempt, go to the dead-letter queue; others wait.
func (h *Handler) failed(ctx context.Context, log *slog.Logger, m queue.Message, msg *message.Row, f *register.Failure) Outcome {
	if errors.Is(f.Err, context.Canceled) && ctx.Err() != nil {
		// The worker is stopping: interrupted work is not a failure.
		return Outcome{Action: Release, Result: Released}
	}
	h.countError(f.Code)
	if b := h.Breakers.Get(f.Pause); b != nil {
		b.Trip(f.Code, f.Error(), f.Fix)
		return h.pause(ctx, log, *msg, b)
	}
	if f.Permanent {
		return h.deadLetter(ctx, log, m, msg, f.Code, f.Error())
	}
	if h.MaxReceiveCount > 0 && m.ReceiveCount >= h.MaxReceiveCount {
		return h.deadLetter(ctx, log, m, msg, f.Code, fmt.Sprintf("gave up after %d attempts: %v", m.ReceiveCount, f))
	}
	delay := h.Backoff.Delay(m.ReceiveCount)
	log.Warn("transient failure; will retry", "err", f.Error(), "retry_in", delay.Round(time.Second).String())
	if err := h.bookkeep(ctx, log, func(ctx context.Context) error {
		return h.Rows.NoteError(ctx, msg.Job, msg.Row, f.Code, rowReason(f.Error()))
	}); err != nil {
		log.Warn("could not record the error on the row", "err", err)
	}
	return Outcome{Action: Retry, Delay: delay, Result: Retried}
}

// pause hands the row back untouched while b is open. The pause is a sign
// of life of the row (recorded at most every TouchEvery, and not while the
// database refuses the pipeline): a dependency outage longer than the
// maintainer's recover-after must not make its rescuer send copies of
// messages that are alive.
func (h *Handler) pause(ctx context.Context, log *slog.Logger, msg message.Row, b *breaker.Breaker) Outcome {
	if h.Breakers.Blocking(breaker.Database) == nil {
		every := h.TouchEvery
		if every <= 0 {
			every = DefaultTouchEvery
		}
		if err := h.bookkeep(ctx, log, func(ctx context.Context) error { return h.Rows.Touch(ctx, msg.Job, msg.Row, every) }); err != nil {
			log.Debug("could not record the paused row's sign of life", "err", err)
		}
	}
	return Outcome{Action: Release, Delay: b.RetryIn(), Result: Paused}
}

// DefaultTouchEvery is Handler.TouchEvery's default.
const DefaultTouchEvery = time.Minute

// deadLetter fails the message for good. A row's failure is claimed first
// (the row goes from queued to failed, its dead letter pending), so that of
// several deliveries failing at once only one sends the row's one dead
// letter; a delivery that finds the row final drops its message. A crash
// after the claim leaves the message to be delivered again, which finishes
// the send (see Handle). A message without a (matching) recorded row has
// no row to claim: it is sent as it is.
func (h *Handler) deadLetter(ctx context.Context, log *slog.Logger, m queue.Message, msg *message.Row, code, reason string) Outcome {
	reason = rowReason(reason)
	if msg != nil && message.OwnsRow(code) {
		var claimed bool
		if err := h.bookkeep(ctx, log, func(ctx context.Context) (err error) {
			claimed, err = h.Rows.ClaimFailure(ctx, msg.Job, msg.Row, code, reason)
			return err
		}); err != nil {
			log.Error("could not mark the row failed; will retry", "err", err)
			return Outcome{Action: Retry, Delay: h.Backoff.Delay(m.ReceiveCount), Result: Retried}
		}
		if !claimed {
			log.Info("the row is final already (another delivery finished it); message dropped")
			return Outcome{Action: Ack, Result: Skipped}
		}
	}
	return h.sendDeadLetter(ctx, log, m, msg, code, reason)
}

// sendDeadLetter sends the message to the dead-letter queue with the
// reason and, for a row, records that its dead letter is sent. A message
// that came from a replay keeps the replay's pass attribute, so that the
// pass does not move it again.
func (h *Handler) sendDeadLetter(ctx context.Context, log *slog.Logger, m queue.Message, msg *message.Row, code, reason string) Outcome {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
	defer cancel()
	attrs := map[string]string{
		message.AttrErrorCode:    code,
		message.AttrErrorMessage: reason,
		message.AttrAttempts:     strconv.Itoa(m.ReceiveCount),
		message.AttrFailedAt:     h.now().UTC().Format(time.RFC3339),
	}
	if pass := m.Attributes[message.AttrReplayPass]; pass != "" {
		attrs[message.AttrReplayPass] = pass
	}
	ownRow := msg != nil && message.OwnsRow(code)
	if msg != nil {
		attrs[message.AttrJob], attrs[message.AttrRow] = msg.Job, strconv.FormatInt(msg.Row, 10)
	}
	send := func() error { return h.DLQ.Send(bctx, queue.Entry{Body: m.Body, Attributes: attrs}) }
	if err := retry.Do(bctx, h.Registrar.Retry, func(err error) bool { return !retry.IsContextError(err) }, send, nil); err != nil {
		// The message comes back; a claimed row's send is finished then.
		log.Error("could not send the message to the dead-letter queue; it will be redelivered", "err", err)
		return Outcome{Action: Retry, Delay: h.Backoff.Delay(m.ReceiveCount), Result: Retried}
	}
	if ownRow {
		if err := h.bookkeep(ctx, log, func(ctx context.Context) error { return h.Rows.DeadLettered(ctx, msg.Job, msg.Row) }); err != nil {
			// The dead letter is sent; the row only keeps saying it may not be.
			log.Warn("sent to the dead-letter queue but could not record it on the row", "err", err)
		}
	}
	if !ownRow {
		h.countError(code)
	}
	log.Warn("row failed; sent to the dead-letter queue", "reason", reason)
	return Outcome{Action: Ack, Result: Failed}
}

// db runs a bookkeeping call within the attempt, retrying transient
// database errors (a restart, a lost connection) on the registrar's schedule.
func (h *Handler) db(ctx context.Context, log *slog.Logger, fn func(context.Context) error) error {
	return retry.Do(ctx, h.Registrar.Retry, func(err error) bool {
		return !retry.IsContextError(err) && !errors.Is(err, jobs.ErrRowNotFound) && register.Classify(register.StepDatabase, err).Retryable()
	}, func() error { return fn(ctx) }, func(err error, wait time.Duration) {
		log.Warn("database error; retrying", "step", register.StepDatabase, "retry_in", wait.Round(time.Millisecond).String(), "err", err.Error())
	})
}

// bookkeep is db for the writes that must happen even while the worker is
// stopping: it runs on a context that outlives ctx, for a bounded time.
func (h *Handler) bookkeep(ctx context.Context, log *slog.Logger, fn func(context.Context) error) error {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
	defer cancel()
	return h.db(bctx, log, fn)
}

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// rowReason is a failure's reason as the row, the dead letter and the
// operator's tools keep it: any email or FEIN an error echoed masked (the
// row's own are in their columns), bounded in size.
func rowReason(s string) string { return textbound.Truncate(mask.Text(s), maxErrorMessage) }
