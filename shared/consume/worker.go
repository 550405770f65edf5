package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/massgov/bulk-user-import/shared/breaker"
	"github.com/massgov/bulk-user-import/shared/budget"
	"github.com/massgov/bulk-user-import/shared/metrics"
	"github.com/massgov/bulk-user-import/shared/queue"
	"github.com/massgov/bulk-user-import/shared/retry"
)

// Defaults of the worker loop that the deployment must agree with: the
// queue's visibility timeout and the ECS stop timeout.
const (
	DefaultVisibilityTimeout = time.Minute
	DefaultShutdownTimeout   = 20 * time.Second
)

// Config tunes the worker loop. Zero values take the defaults.
type Config struct {
	Concurrency int           // messages handled at once (default 16)
	WaitTime    time.Duration // long-poll wait (default and maximum 20 s)
	// VisibilityTimeout is how long a received message stays hidden; while
	// it is handled, the worker extends it every HeartbeatInterval, so it
	// only matters when a worker dies (default 60 s).
	VisibilityTimeout time.Duration
	HeartbeatInterval time.Duration // default a third of the visibility timeout
	MessageTimeout    time.Duration // total time allowed per message (default 5 min)
	ShutdownTimeout   time.Duration // time in-flight messages get to finish on stop (default 20 s)
	AckInterval       time.Duration // longest wait before a partial delete batch is sent (default 100 ms)
	SummaryInterval   time.Duration // how often the summary line is logged (default 30 s; negative: never)
	// MaxReceiveCount is the queue's: a message released at shutdown that
	// would come back for its last attempt or later is sent again as a new
	// message instead, so that interrupted work does not use up attempts.
	MaxReceiveCount int
}

// SetDefaults fills zero fields.
func (c *Config) SetDefaults() {
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
	if c.WaitTime == 0 {
		c.WaitTime = queue.MaxWait
	}
	if c.VisibilityTimeout == 0 {
		c.VisibilityTimeout = DefaultVisibilityTimeout
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = c.VisibilityTimeout / 3
	}
	if c.MessageTimeout == 0 {
		c.MessageTimeout = 5 * time.Minute
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.AckInterval == 0 {
		c.AckInterval = 100 * time.Millisecond
	}
	if c.SummaryInterval == 0 {
		c.SummaryInterval = 30 * time.Second
	}
}

// SilenceBound is the longest a live message of the import queue can go
// without being received again, once no message is waiting in the queue
// (none visible or delayed): after a receive a message waits at most
// MessageTimeout for a free handler and MessageTimeout more to be handled
// (plus the bookkeeping's bound); then it is deleted, or hidden for a
// retry delay (at most b.Max) or, when its worker died, for the
// visibility timeout; then, visible in a queue without a backlog, it is
// received at once. A minute of margin is added. The maintainer presumes a
// queued row lost once it has shown no sign of life for this long.
func SilenceBound(c Config, b Backoff) time.Duration {
	c.SetDefaults()
	return 2*(c.MessageTimeout+bookkeepingTimeout) + max(c.VisibilityTimeout, b.Max) + time.Minute
}

// Validate names every bad field.
func (c Config) Validate() error {
	var errs []error
	if c.Concurrency < 1 || c.Concurrency > 1000 {
		errs = append(errs, fmt.Errorf("concurrency %d: want 1 to 1000", c.Concurrency))
	}
	if c.WaitTime < 0 || c.WaitTime > queue.MaxWait {
		errs = append(errs, fmt.Errorf("wait time %s: want 0 to %s", c.WaitTime, queue.MaxWait))
	}
	if c.VisibilityTimeout < 3*time.Second || c.VisibilityTimeout > 12*time.Hour {
		errs = append(errs, fmt.Errorf("visibility timeout %s: want 3s to 12h", c.VisibilityTimeout))
	}
	if c.HeartbeatInterval < 0 || (c.HeartbeatInterval > 0 && c.HeartbeatInterval > c.VisibilityTimeout*2/3) {
		errs = append(errs, fmt.Errorf("heartbeat interval %s: want at most two thirds of the visibility timeout %s", c.HeartbeatInterval, c.VisibilityTimeout))
	}
	if c.MessageTimeout < 0 || c.MessageTimeout > 12*time.Hour {
		errs = append(errs, fmt.Errorf("message timeout %s: want up to 12h", c.MessageTimeout))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("shutdown timeout %s: want 0 or more", c.ShutdownTimeout))
	}
	return errors.Join(errs...)
}

// Receiver is the queue as the worker uses it.
type Receiver interface {
	Receive(ctx context.Context, n int, wait, visibility time.Duration) ([]queue.Message, error)
	DeleteBatch(ctx context.Context, receiptHandles []string) ([]queue.EntryError, error)
	ChangeVisibility(ctx context.Context, receiptHandle string, d time.Duration) error
	ChangeVisibilityBatch(ctx context.Context, receiptHandles []string, d time.Duration) ([]queue.EntryError, error)
	Send(ctx context.Context, e queue.Entry) error
}

var _ Receiver = (*queue.Queue)(nil)

// MessageHandler turns a message into an outcome.
type MessageHandler interface {
	Handle(ctx context.Context, m queue.Message) Outcome
}

var _ MessageHandler = (*Handler)(nil)

// Worker receives messages and hands them to the handler.
type Worker struct {
	Queue   Receiver
	Handler MessageHandler
	Config  Config
	Log     *slog.Logger
	Metrics *metrics.Worker // counters; created by Run when nil
	// Breakers, if set: while the database's or Cognito's is open (every
	// row needs both), the worker receives nothing.
	Breakers *breaker.Set

	mu     sync.Mutex
	leases *queue.Leases // of the messages being handled, by receipt handle
	// pausedRun counts the messages paused in a row: when a whole batch
	// was, the worker waits for the breaker before it receives again.
	pausedRun atomic.Int64

	acks    chan string   // receipt handles to delete
	ackStop chan struct{} // closed when the acknowledger must flush and stop
	// ackMu guards ackStopped: once it is set, acknowledgements are
	// deleted at once by their sender (a handler that outlived the
	// shutdown deadline), never left in acks.
	ackMu      sync.RWMutex
	ackStopped bool
}

// Stats returns the counters so far.
func (w *Worker) Stats() metrics.Snapshot { return w.metrics().Snapshot(time.Now()) }

func (w *Worker) metrics() *metrics.Worker {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.Metrics == nil {
		w.Metrics = &metrics.Worker{}
	}
	return w.Metrics
}

// Run receives and handles messages until ctx is cancelled, then stops
// receiving at once, gives in-flight messages Config.ShutdownTimeout to
// finish, releases the rest for other workers, flushes acknowledgements
// and returns. It returns an error only when it cannot work at all (the
// queue does not exist).
func (w *Worker) Run(ctx context.Context) error {
	w.Config.SetDefaults()
	if err := w.Config.Validate(); err != nil {
		return fmt.Errorf("worker configuration: %w", err)
	}
	m := w.metrics()
	leases := queue.NewLeases(w.Queue, w.Config.VisibilityTimeout, w.Config.HeartbeatInterval, w.Log)
	leases.OnExtend = func(n int) { m.Heartbeats.Add(int64(n)) }
	w.mu.Lock()
	w.leases = leases
	w.mu.Unlock()

	// In-flight work outlives ctx until the shutdown deadline.
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	var background sync.WaitGroup
	bgCtx, stopBackground := context.WithCancel(context.Background())
	defer stopBackground()

	w.acks, w.ackStop = make(chan string, 4*queue.MaxBatchEntries), make(chan struct{})
	background.Go(w.acknowledge)
	background.Go(func() { leases.Run(bgCtx) })
	if w.Config.SummaryInterval > 0 {
		background.Go(func() { w.summarize(bgCtx) })
	}

	var handlers sync.WaitGroup
	runErr := w.receiveLoop(ctx, workCtx, &handlers)

	w.Log.Info("stopping: waiting for messages in flight", "in_flight", m.InFlight.Load(), "deadline", w.Config.ShutdownTimeout.String())
	done := make(chan struct{})
	go func() {
		handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(w.Config.ShutdownTimeout):
		w.Log.Warn("shutdown deadline reached: releasing unfinished messages", "in_flight", m.InFlight.Load())
		stopWork()
		select {
		case <-done:
		case <-time.After(bookkeepingTimeout + 5*time.Second):
			w.Log.Error("some handlers did not stop; their messages reappear after the visibility timeout")
		}
	}
	w.ackMu.Lock()
	w.ackStopped = true
	w.ackMu.Unlock()
	close(w.ackStop)
	stopBackground()
	background.Wait()
	st := m.Snapshot(time.Now())
	w.Log.Info("stopped", "received", st.Received, "succeeded", st.Succeeded, "failed", st.Failed,
		"skipped", st.Skipped, "retried", st.Retried, "released", st.Released, "paused", st.Paused)
	return runErr
}

// receiveRetry spaces the receives after a failed one: 1 s, doubling, at
// most 30 s; a receive that succeeds starts it again.
var receiveRetry = retry.Schedule{Initial: time.Second, Max: 30 * time.Second}

// receiveLoop receives full batches: it holds at most Concurrency messages
// being handled plus one batch waiting to start, and asks for a batch as
// soon as that much room is free. So receives (and deletes) carry up to ten
// messages each, and a free handler finds a message waiting.
func (w *Worker) receiveLoop(ctx, workCtx context.Context, handlers *sync.WaitGroup) error {
	m := w.metrics()
	batch := min(queue.MaxBatchEntries, w.Config.Concurrency)
	held := make(chan struct{}, w.Config.Concurrency+batch) // messages received and not settled
	running := make(chan struct{}, w.Config.Concurrency)    // messages being handled
	errDelays := receiveRetry.BackOff()
	for {
		if b := w.Breakers.Blocking(breaker.Database, breaker.Cognito); b != nil {
			_, f, _ := b.State()
			w.Log.Info("not receiving while "+string(b.Dependency())+" refuses the pipeline", "error_code", f.Code)
			if err := w.Breakers.WaitClosed(ctx, breaker.Database, breaker.Cognito); err != nil {
				return nil
			}
			w.Log.Info("receiving again")
		}
		if b := w.Breakers.Blocking(breaker.Fineos); b != nil && w.pausedRun.Load() >= int64(batch) {
			// Every recent message needed FINEOS: receive again when it
			// may answer (rows that do not need it are not held back long).
			select {
			case <-ctx.Done():
				return nil
			case <-b.Closed():
			case <-time.After(b.RetryIn()):
			}
			w.pausedRun.Store(0)
		}
		for range batch {
			select {
			case held <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
		}
		msgs, err := w.Queue.Receive(ctx, batch, w.Config.WaitTime, w.Config.VisibilityTimeout)
		for range batch - len(msgs) {
			<-held
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if queue.IsQueueMissing(err) {
				return fmt.Errorf("receive: %w", err)
			}
			wait := errDelays.NextBackOff()
			w.Log.Warn("receive failed; retrying", "err", err, "retry_in", wait.String())
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		errDelays.Reset()
		if len(msgs) > 0 {
			m.LastReceived.Store(time.Now().UnixNano())
		}
		for _, msg := range msgs {
			w.leases.Hold(msg.ReceiptHandle, msg.ReceiptHandle)
			m.Received.Add(1)
			m.InFlight.Add(1)
			handlers.Go(func() {
				defer func() { <-held }()
				defer m.InFlight.Add(-1)
				select {
				case running <- struct{}{}:
				case <-ctx.Done():
					// Stopping before it started: hand it back untouched.
					w.settle(msg, Outcome{Action: Release, Result: Released})
					return
				}
				defer func() { <-running }()
				w.settle(msg, w.handle(workCtx, msg))
			})
		}
	}
}

// handle runs the handler with the per-message time limit, turning a panic
// into a retry so that one poisoned message cannot stop the worker.
func (w *Worker) handle(ctx context.Context, m queue.Message) (out Outcome) {
	ctx, cancel := context.WithTimeout(ctx, w.Config.MessageTimeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			w.Log.Error("handler panicked; message will be retried", "message_id", m.ID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			out = Outcome{Action: Retry, Result: Retried}
		}
	}()
	return w.Handler.Handle(ctx, m)
}

// ack queues a message for deletion. After the acknowledger has stopped
// (a handler that outlived the shutdown deadline) it deletes the message
// itself: a message released as a fresh copy must not stay behind too.
func (w *Worker) ack(receiptHandle string) {
	w.ackMu.RLock()
	if !w.ackStopped {
		w.acks <- receiptHandle // the acknowledger drains acks until it stops
		w.ackMu.RUnlock()
		return
	}
	w.ackMu.RUnlock()
	ctx, cancel := context.WithTimeout(context.Background(), bookkeepingTimeout)
	defer cancel()
	failed, err := w.Queue.DeleteBatch(ctx, []string{receiptHandle})
	if err == nil && len(failed) > 0 && !failed[0].Stale() {
		err = failed[0]
	}
	if err != nil {
		w.Log.Warn("delete failed; the message will be redelivered and skipped", "err", err)
	}
}

// settle ends the message's lease, so that no heartbeat touches it from
// now on, counts its result and carries out its action.
func (w *Worker) settle(msg queue.Message, out Outcome) {
	w.leases.End(msg.ReceiptHandle)
	m := w.metrics()
	if out.Result == Paused {
		w.pausedRun.Add(1)
	} else {
		w.pausedRun.Store(0)
	}
	switch out.Result {
	case Succeeded:
		m.Succeeded.Add(1)
	case Failed:
		m.Failed.Add(1)
	case Skipped:
		m.Skipped.Add(1)
	case Released:
		m.Released.Add(1)
	case Paused:
		m.Paused.Add(1)
	default:
		m.Retried.Add(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bookkeepingTimeout)
	defer cancel()
	switch out.Action {
	case Ack:
		w.ack(msg.ReceiptHandle)
	case Retry:
		if err := w.Queue.ChangeVisibility(ctx, msg.ReceiptHandle, out.Delay); err != nil {
			w.Log.Warn("could not delay the message's retry; it reappears after the visibility timeout", "message_id", msg.ID, "err", err)
		}
	case Release:
		w.release(ctx, msg, out.Delay)
	}
}

// release hands an unfinished message back, visible after delay. Each
// receive counts towards the queue's maxReceiveCount, so a message whose
// next receive would be its last attempt (or past it) is sent again as a
// new message (delayed, up to SQS's 15 minutes) and the old one deleted:
// an interruption or a pause must not use up a row's attempts. Otherwise
// its visibility is set to delay.
func (w *Worker) release(ctx context.Context, msg queue.Message, delay time.Duration) {
	if w.Config.MaxReceiveCount > 0 && msg.ReceiveCount+1 >= w.Config.MaxReceiveCount {
		err := w.Queue.Send(ctx, queue.Entry{Body: msg.Body, Attributes: msg.Attributes, Delay: min(delay, queue.MaxDelay)})
		if err == nil {
			w.ack(msg.ReceiptHandle)
			return
		}
		w.Log.Warn("could not send the released message again; releasing it as it is", "message_id", msg.ID, "err", err)
	}
	if err := w.Queue.ChangeVisibility(ctx, msg.ReceiptHandle, delay); err != nil {
		w.Log.Warn("could not release the message; it reappears after the visibility timeout", "message_id", msg.ID, "err", err)
	}
}

// summarize logs a summary line every SummaryInterval.
func (w *Worker) summarize(ctx context.Context) {
	tick := time.NewTicker(w.Config.SummaryInterval)
	defer tick.Stop()
	prev := w.metrics().Snapshot(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cur := w.metrics().Snapshot(time.Now())
		rate := float64(cur.Finished()-prev.Finished()) / cur.At.Sub(prev.At).Seconds()
		attrs := []any{"processed", cur.Received, "succeeded", cur.Succeeded, "failed", cur.Failed,
			"retried", cur.Retried, "skipped", cur.Skipped, "released", cur.Released, "paused", cur.Paused, "in_flight", cur.InFlight,
			"rows_per_s", fmt.Sprintf("%.1f", rate), "leader", cur.Leader == 1, "jobs_completed", cur.JobsCompleted,
			"rows_resent", cur.RowsResent}
		if len(cur.Budgets) > 0 {
			attrs = append(attrs, budgetAttrs(cur.Budgets), "budget_syncs", cur.BudgetSyncs)
		}
		w.Log.Info("summary", attrs...)
		prev = cur
	}
}

// budgetAttrs is the summary's view of the request limits: for each, the
// fleet's budget and current rate, the live workers sharing it (and how
// many are idle), this worker's share (or cap), and its attempts and throttled attempts.
func budgetAttrs(states []budget.State) slog.Attr {
	var per []any
	for _, st := range states {
		per = append(per, slog.Group(st.Name, "budget", st.Budget, "fleet_rate", round2(st.Rate), "workers", st.Workers, "idle", st.Idle,
			"share", round2(st.Share), "calls", st.Calls, "throttled", st.Throttled))
	}
	return slog.Group("limits", per...)
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

// acknowledge deletes acknowledged messages in batches of up to ten, sent
// when full or after Config.AckInterval, until ackStop is closed.
func (w *Worker) acknowledge() {
	var pending []string
	timer := time.NewTimer(w.Config.AckInterval)
	defer timer.Stop()
	flush := func() {
		if len(pending) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), bookkeepingTimeout)
		defer cancel()
		failed, err := w.Queue.DeleteBatch(ctx, pending)
		if err != nil {
			w.Log.Warn("delete batch failed; the messages will be redelivered and skipped", "count", len(pending), "err", err)
		}
		for _, f := range failed {
			if f.Stale() {
				continue // handled by another receive: nothing to delete
			}
			w.Log.Warn("delete failed; the message will be redelivered and skipped", "code", f.Code, "err", f.Message)
		}
		pending = pending[:0]
	}
	add := func(h string) {
		pending = append(pending, h)
		if len(pending) == queue.MaxBatchEntries {
			flush()
		}
	}
	for {
		select {
		case h := <-w.acks:
			add(h)
		case <-w.ackStop:
			for {
				select {
				case h := <-w.acks:
					add(h)
				default:
					flush()
					return
				}
			}
		case <-timer.C:
			flush()
			timer.Reset(w.Config.AckInterval)
		}
	}
}
