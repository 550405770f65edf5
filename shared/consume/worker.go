package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/massgov/bulk-user-import/shared/queue"
)

// Config tunes the worker loop. Zero values take the defaults.
type Config struct {
	Concurrency       int           // messages handled at once (default 16)
	WaitTime          time.Duration // long-poll wait (default and maximum 20 s)
	VisibilityTimeout time.Duration // how long a received message stays hidden (default 2 min)
	MessageTimeout    time.Duration // time allowed per message (default 90 s, below the visibility timeout)
	ShutdownTimeout   time.Duration // time in-flight messages get to finish on stop (default 20 s)
	AckInterval       time.Duration // longest wait before a partial delete batch is sent (default 100 ms)
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
		c.VisibilityTimeout = 2 * time.Minute
	}
	if c.MessageTimeout == 0 {
		c.MessageTimeout = 90 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 20 * time.Second
	}
	if c.AckInterval == 0 {
		c.AckInterval = 100 * time.Millisecond
	}
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
	if c.VisibilityTimeout < time.Second || c.VisibilityTimeout > 12*time.Hour {
		errs = append(errs, fmt.Errorf("visibility timeout %s: want 1s to 12h", c.VisibilityTimeout))
	}
	if c.MessageTimeout <= 0 || c.MessageTimeout >= c.VisibilityTimeout {
		errs = append(errs, fmt.Errorf("message timeout %s: want more than 0 and less than the visibility timeout %s", c.MessageTimeout, c.VisibilityTimeout))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("shutdown timeout %s: want more than 0", c.ShutdownTimeout))
	}
	return errors.Join(errs...)
}

// Receiver is the queue as the worker uses it.
type Receiver interface {
	Receive(ctx context.Context, n int, wait, visibility time.Duration) ([]queue.Message, error)
	DeleteBatch(ctx context.Context, receiptHandles []string) ([]queue.EntryError, error)
	ChangeVisibility(ctx context.Context, receiptHandle string, d time.Duration) error
}

var _ Receiver = (*queue.Queue)(nil)

// MessageHandler turns a message into an outcome.
type MessageHandler interface {
	Handle(ctx context.Context, m queue.Message) Outcome
}

var _ MessageHandler = (*Handler)(nil)

// Stats counts what a worker did.
type Stats struct {
	Received  int64
	Succeeded int64
	Failed    int64
	Skipped   int64
	Retried   int64
	Released  int64
	InFlight  int64
}

// Worker receives messages and hands them to the handler.
type Worker struct {
	Queue   Receiver
	Handler MessageHandler
	Config  Config
	Log     *slog.Logger

	received, succeeded, failed, skipped, retried, released, inFlight atomic.Int64
}

// Stats returns the counters so far.
func (w *Worker) Stats() Stats {
	return Stats{
		Received: w.received.Load(), Succeeded: w.succeeded.Load(), Failed: w.failed.Load(),
		Skipped: w.skipped.Load(), Retried: w.retried.Load(), Released: w.released.Load(), InFlight: w.inFlight.Load(),
	}
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
	// In-flight work outlives ctx until the shutdown deadline.
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()

	acks := make(chan string, 4*queue.MaxBatchEntries)
	acked := make(chan struct{})
	go func() {
		defer close(acked)
		w.acknowledge(acks)
	}()

	slots := make(chan struct{}, w.Config.Concurrency)
	var wg sync.WaitGroup
	runErr := w.receiveLoop(ctx, workCtx, slots, acks, &wg)

	w.Log.Info("stopping: waiting for messages in flight", "in_flight", w.inFlight.Load(), "deadline", w.Config.ShutdownTimeout.String())
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(w.Config.ShutdownTimeout):
		w.Log.Warn("shutdown deadline reached: releasing unfinished messages", "in_flight", w.inFlight.Load())
		stopWork()
		select {
		case <-done:
		case <-time.After(bookkeepingTimeout + 5*time.Second):
			w.Log.Error("some handlers did not stop; their messages reappear after the visibility timeout")
		}
	}
	close(acks)
	<-acked
	st := w.Stats()
	w.Log.Info("stopped", "received", st.Received, "succeeded", st.Succeeded, "failed", st.Failed,
		"skipped", st.Skipped, "retried", st.Retried, "released", st.Released)
	return runErr
}

func (w *Worker) receiveLoop(ctx, workCtx context.Context, slots chan struct{}, acks chan<- string, wg *sync.WaitGroup) error {
	batch := min(queue.MaxBatchEntries, w.Config.Concurrency)
	errDelay := time.Second
	for {
		// Take one free slot (waiting if all are busy), then any others free
		// now, so a receive never asks for more than can start at once.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		n := 1
		for n < batch {
			select {
			case slots <- struct{}{}:
				n++
				continue
			default:
			}
			break
		}
		msgs, err := w.Queue.Receive(ctx, n, w.Config.WaitTime, w.Config.VisibilityTimeout)
		for range n - len(msgs) {
			<-slots
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if queue.IsQueueMissing(err) {
				return fmt.Errorf("receive: %w", err)
			}
			w.Log.Warn("receive failed; retrying", "err", err, "retry_in", errDelay.String())
			select {
			case <-time.After(errDelay):
			case <-ctx.Done():
				return nil
			}
			errDelay = min(errDelay*2, 30*time.Second)
			continue
		}
		errDelay = time.Second
		for _, m := range msgs {
			w.received.Add(1)
			w.inFlight.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				defer w.inFlight.Add(-1)
				w.settle(m, w.handle(workCtx, m), acks)
			}()
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
			out = Outcome{Action: Retry, Result: "retry"}
		}
	}()
	return w.Handler.Handle(ctx, m)
}

func (w *Worker) settle(m queue.Message, out Outcome, acks chan<- string) {
	switch out.Result {
	case "succeeded":
		w.succeeded.Add(1)
	case "failed":
		w.failed.Add(1)
	case "skipped":
		w.skipped.Add(1)
	case "released":
		w.released.Add(1)
	default:
		w.retried.Add(1)
	}
	switch out.Action {
	case Ack:
		acks <- m.ReceiptHandle
	case Retry, Release:
		delay := out.Delay
		if out.Action == Release {
			delay = 0
		}
		ctx, cancel := context.WithTimeout(context.Background(), bookkeepingTimeout)
		defer cancel()
		if err := w.Queue.ChangeVisibility(ctx, m.ReceiptHandle, delay); err != nil {
			w.Log.Warn("could not change the message's visibility; it reappears after the visibility timeout", "message_id", m.ID, "err", err)
		}
	}
}

// acknowledge deletes acknowledged messages in batches of up to ten, sent
// when full or after Config.AckInterval.
func (w *Worker) acknowledge(acks <-chan string) {
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
			w.Log.Warn("delete failed; the message will be redelivered and skipped", "code", f.Code, "err", f.Message)
		}
		pending = pending[:0]
	}
	for {
		select {
		case h, ok := <-acks:
			if !ok {
				flush()
				return
			}
			pending = append(pending, h)
			if len(pending) == queue.MaxBatchEntries {
				flush()
			}
		case <-timer.C:
			flush()
			timer.Reset(w.Config.AckInterval)
		}
	}
}
