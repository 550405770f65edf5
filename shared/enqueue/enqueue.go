// Package enqueue sends a job's recorded rows as SQS messages, one per row,
// in batches of ten with several calls in flight: for the first time (the
// splitter), and again when their messages were lost (the maintainer and
// splitter resend). Rows are read from the database a page at a time, so
// memory does not grow with the job.
package enqueue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/sync/errgroup"

	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/message"
	"github.com/massgov/bulk-user-import/shared/queue"
)

// Sender sends message batches.
type Sender interface {
	SendBatch(ctx context.Context, entries []queue.Entry) ([]queue.EntryError, error)
}

var _ Sender = (*queue.Queue)(nil)

// Book records what was sent; *lifecycle.Lifecycle is one.
type Book interface {
	MarkRowsSent(ctx context.Context, jobID string, rows []int64) error
	MarkResent(ctx context.Context, jobID string, rows []int64) ([]int64, error)
}

var _ Book = (*lifecycle.Lifecycle)(nil)

// markTimeout bounds the recording of messages sent, which happens even
// when the run is stopping (they were sent).
const markTimeout = 10 * time.Second

// Enqueuer sends rows of jobs to the import queue.
type Enqueuer struct {
	Jobs  *jobs.Store // the rows to send, and the job's lock
	Book  Book        // records the sends
	Queue Sender
	// Concurrency is the number of SendMessageBatch calls in flight
	// (default 8). PageSize is the number of rows read from the database
	// at a time (default 1000).
	Concurrency int
	PageSize    int
	// Progress, if set, hears how many messages were sent so far.
	Progress func(sent int64)
}

func (e *Enqueuer) defaults() (pageSize, conc int) {
	pageSize, conc = e.PageSize, e.Concurrency
	if pageSize <= 0 {
		pageSize = 1000
	}
	if conc <= 0 {
		conc = 8
	}
	return pageSize, conc
}

// SendUnsent sends the job's rows whose message was never sent and records
// them as sent, a page at a time; rows sent before an error stay recorded.
// The caller holds the job's lock. It returns the messages sent.
func (e *Enqueuer) SendUnsent(ctx context.Context, job jobs.Job) (int64, error) {
	return e.each(ctx, job, jobs.Selection{Unsent: true}, func(page []jobs.PendingRow) (int64, error) {
		ok, err := e.send(ctx, job, page)
		// Record what went out even when part of the page failed, or the
		// run is stopping: a re-run must not send it again.
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markTimeout)
		defer cancel()
		if merr := e.Book.MarkRowsSent(mctx, job.ID, ok); merr != nil {
			return int64(len(ok)), errors.Join(err, merr)
		}
		return int64(len(ok)), err
	})
}

// Resend sends again the messages of the job's queued rows that sel picks,
// under the job's lock (jobs.ErrJobBusy when a splitter or another
// re-send holds it). Each row is marked re-sent before its message goes
// out, so a crash in between leaves it to be picked again later, never
// lost; a row a worker finished meanwhile is not sent. A duplicate message
// is absorbed by the idempotent registration. With dryRun it only counts.
// It returns the messages sent (or that would be).
func (e *Enqueuer) Resend(ctx context.Context, job jobs.Job, sel jobs.Selection, dryRun bool) (int64, error) {
	sel.Unsent = false
	if dryRun {
		return e.each(ctx, job, sel, func(page []jobs.PendingRow) (int64, error) { return int64(len(page)), nil })
	}
	unlock, err := e.Jobs.Lock(ctx, job.ID)
	if err != nil {
		return 0, err
	}
	defer unlock()
	return e.each(ctx, job, sel, func(page []jobs.PendingRow) (int64, error) {
		ids := make([]int64, len(page))
		for i, r := range page {
			ids[i] = r.Row
		}
		marked, err := e.Book.MarkResent(ctx, job.ID, ids)
		if err != nil {
			return 0, err
		}
		still := make(map[int64]bool, len(marked))
		for _, id := range marked {
			still[id] = true
		}
		var resend []jobs.PendingRow
		for _, r := range page {
			if still[r.Row] {
				resend = append(resend, r)
			}
		}
		ok, err := e.send(ctx, job, resend)
		return int64(len(ok)), err
	})
}

// each pages through the rows sel picks and hands each page to fn, which
// returns how many it sent.
func (e *Enqueuer) each(ctx context.Context, job jobs.Job, sel jobs.Selection, fn func([]jobs.PendingRow) (int64, error)) (int64, error) {
	pageSize, _ := e.defaults()
	var sent, after int64
	for {
		page, err := e.Jobs.RowsToSend(ctx, job.ID, sel, after, pageSize)
		if err != nil {
			return sent, err
		}
		if len(page) == 0 {
			return sent, nil
		}
		after = page[len(page)-1].Row
		n, err := fn(page)
		sent += n
		if e.Progress != nil {
			e.Progress(sent)
		}
		if err != nil {
			return sent, err
		}
	}
}

// send sends the rows' messages in batches, several calls in flight, and
// returns the rows whose messages SQS accepted. Entries refused for a
// passing reason are retried with backoff.
func (e *Enqueuer) send(ctx context.Context, job jobs.Job, rows []jobs.PendingRow) ([]int64, error) {
	entries := make([]queue.Entry, 0, len(rows))
	for _, r := range rows {
		body, err := message.Encode(message.Row{Job: job.ID, Row: r.Row, Email: r.Email, FEIN: r.FEIN, ForceRegistration: job.ForceRegistration})
		if err != nil {
			return nil, fmt.Errorf("row %d: %w", r.Row, err)
		}
		entries = append(entries, queue.Entry{ID: strconv.FormatInt(r.Row, 10), Body: body})
	}
	batches, err := queue.Batches(entries)
	if err != nil {
		return nil, err
	}
	_, conc := e.defaults()
	var mu sync.Mutex
	var ok []int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(conc)
	for _, b := range batches {
		g.Go(func() error {
			sent, err := e.sendBatch(gctx, b)
			mu.Lock()
			ok = append(ok, sent...)
			mu.Unlock()
			return err
		})
	}
	return ok, g.Wait()
}

func (e *Enqueuer) sendBatch(ctx context.Context, batch []queue.Entry) ([]int64, error) {
	var ok []int64
	pending := batch
	bo := backoff.WithContext(backoff.WithMaxRetries(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(100*time.Millisecond), backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(0)), 6), ctx)
	err := backoff.Retry(func() error {
		failed, err := e.Queue.SendBatch(ctx, pending)
		if err != nil {
			return err // the SDK already retried the call; try the batch again
		}
		refused := map[string]queue.EntryError{}
		var fault error
		for _, f := range failed {
			refused[f.ID] = f
			if f.SenderFault && fault == nil {
				fault = fmt.Errorf("SQS refused message %s: %w", f.ID, f)
			}
		}
		// The accepted entries are sent, whatever became of the others.
		var retry []queue.Entry
		for _, en := range pending {
			if _, bad := refused[en.ID]; bad {
				retry = append(retry, en)
				continue
			}
			row, _ := strconv.ParseInt(en.ID, 10, 64)
			ok = append(ok, row)
		}
		if fault != nil {
			return backoff.Permanent(fault) // retrying will not help
		}
		pending = retry
		if len(pending) > 0 {
			return fmt.Errorf("%d messages refused for now: %v", len(pending), failed[0])
		}
		return nil
	}, bo)
	return ok, err
}
