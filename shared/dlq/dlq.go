// Package dlq is the on-call engineer's view of the dead-letter queue: list
// what failed and why, replay messages to the import queue once the data
// is fixed, and purge those that never will be.
//
// Every operation is one pass over the queue. A pass receives each visible
// message once and holds it (extending its visibility) until the pass
// ends; then every message it did not move or delete is released at once
// (visibility 0). Nothing is consumed by looking. Moving is send-then-
// delete: a crash in between leaves a duplicate, which the idempotent
// worker absorbs, never a loss; and since a held message is invisible to
// others, two operators never move the same message.
package dlq

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/mask"
	"github.com/massgov/bulk-user-import/shared/message"
	"github.com/massgov/bulk-user-import/shared/queue"
)

// Queue is the dead-letter queue as the tools use it.
type Queue interface {
	Receive(ctx context.Context, n int, wait, visibility time.Duration) ([]queue.Message, error)
	DeleteBatch(ctx context.Context, receiptHandles []string) ([]queue.EntryError, error)
	ChangeVisibilityBatch(ctx context.Context, receiptHandles []string, d time.Duration) ([]queue.EntryError, error)
}

// Sender is the import queue, for replays.
type Sender interface {
	SendBatch(ctx context.Context, entries []queue.Entry) ([]queue.EntryError, error)
}

// Rows is the bookkeeping of the rows whose dead letters are replayed or
// purged; *lifecycle.Lifecycle is one.
type Rows interface {
	Requeue(ctx context.Context, jobID string, rows []int64) ([]lifecycle.Requeued, error)
	Unrequeue(ctx context.Context, jobID string, rows []lifecycle.Requeued) (int64, error)
	Purge(ctx context.Context, jobID string, rows []int64, code string) (int64, error)
}

var (
	_ Queue  = (*queue.Queue)(nil)
	_ Sender = (*queue.Queue)(nil)
	_ Rows   = (*lifecycle.Lifecycle)(nil)
)

// Tool runs the operations.
type Tool struct {
	DLQ  Queue
	Main Sender // for replay
	Rows Rows   // rows are requeued on replay and marked on purge
	Log  *slog.Logger
	// Hold is the visibility of held messages, extended while a pass runs
	// (default 1 min). Wait is the long poll of each receive (default 2 s).
	Hold, Wait time.Duration
	// MaxHeld bounds a pass: past it the pass stops and says it is
	// partial (default 50,000 messages).
	MaxHeld int
}

// Entry describes a dead-lettered message.
type Entry struct {
	ID       string `json:"message_id"`
	Job      string `json:"job,omitempty"`
	Row      int64  `json:"row,omitempty"`
	Code     string `json:"error_code"`
	Error    string `json:"error,omitempty"`
	Attempts string `json:"attempts,omitempty"`
	FailedAt string `json:"failed_at,omitempty"`
	Email    string `json:"email,omitempty"` // masked
	FEIN     string `json:"fein,omitempty"`  // masked

	body   string
	handle string
	sentAt time.Time // when SQS got it: the dead letter's sending, or the original send for a redrive
	pass   string    // the replay pass whose move this message came from
}

// key names the row of the message ("" for a message without one).
func (e Entry) key() string {
	if e.Job == "" || e.Row <= 0 {
		return ""
	}
	return e.Job + "/" + strconv.FormatInt(e.Row, 10)
}

func describe(m queue.Message) Entry {
	e := Entry{
		ID: m.ID, Code: m.Attributes[message.AttrErrorCode], Error: m.Attributes[message.AttrErrorMessage],
		Attempts: m.Attributes[message.AttrAttempts], FailedAt: m.Attributes[message.AttrFailedAt],
		Job: m.Attributes[message.AttrJob], body: m.Body, handle: m.ReceiptHandle,
		sentAt: m.SentAt, pass: m.Attributes[message.AttrReplayPass],
	}
	e.Row, _ = strconv.ParseInt(m.Attributes[message.AttrRow], 10, 64)
	if e.Code == "" {
		e.Code = message.CodeRedriven
		e.Attempts = strconv.Itoa(m.ReceiveCount)
	}
	if msg, err := message.Decode(m.Body); err == nil {
		e.Job, e.Row = msg.Job, msg.Row
		e.Email, e.FEIN = mask.Email(msg.Email), mask.FEIN(msg.FEIN)
	}
	return e
}

// Filter selects messages; empty fields match everything.
type Filter struct {
	Job  string
	Code string
}

// Match reports whether e is selected.
func (f Filter) Match(e Entry) bool {
	return (f.Job == "" || f.Job == e.Job) && (f.Code == "" || f.Code == e.Code)
}

func (t *Tool) defaults() (hold, wait time.Duration, maxHeld int) {
	hold, wait, maxHeld = t.Hold, t.Wait, t.MaxHeld
	if hold <= 0 {
		hold = time.Minute
	}
	if wait <= 0 {
		wait = 2 * time.Second
	}
	if maxHeld <= 0 {
		maxHeld = 50000
	}
	return hold, wait, maxHeld
}

// Pass says how a pass over the queue went.
type Pass struct {
	Seen    int  `json:"seen"`    // distinct messages looked at
	Partial bool `json:"partial"` // stopped at MaxHeld or by a limit: more may remain
}

// scan receives every visible message once and hands each batch to visit,
// which returns the message ids it removed from the queue; the others are
// held until the pass ends, then released. visit may ask to stop.
func (t *Tool) scan(ctx context.Context, visit func(ctx context.Context, batch []Entry) (removed map[string]bool, stop bool, err error)) (Pass, error) {
	hold, wait, maxHeld := t.defaults()
	var p Pass
	leases := queue.NewLeases(t.DLQ, hold, hold/2, t.Log)
	hbCtx, stopHeartbeat := context.WithCancel(ctx)
	hbDone := make(chan struct{})
	defer func() {
		// The heartbeat must be over before the release: a late extension
		// would hide released messages again.
		stopHeartbeat()
		<-hbDone
		rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		leases.ReleaseAll(rctx)
	}()
	go func() {
		defer close(hbDone)
		leases.Run(hbCtx)
	}()

	seen := map[string]bool{}
	empties := 0
	for empties < 2 {
		msgs, err := t.DLQ.Receive(ctx, queue.MaxBatchEntries, wait, hold)
		if err != nil {
			return p, fmt.Errorf("receive from the dead-letter queue: %w", err)
		}
		if len(msgs) == 0 {
			empties++ // two empty long polls in a row: the queue is done
			continue
		}
		empties = 0
		var batch []Entry
		for _, m := range msgs {
			leases.Hold(m.ID, m.ReceiptHandle)
			if !seen[m.ID] {
				seen[m.ID] = true
				batch = append(batch, describe(m))
			}
		}
		p.Seen += len(batch)
		removed, stop, err := visit(ctx, batch)
		for id := range removed {
			leases.End(id)
		}
		if err != nil {
			return p, err
		}
		if stop {
			p.Partial = true
			return p, nil
		}
		if leases.Len() >= maxHeld {
			t.Log.Warn("pass stopped: too many messages held", "held", leases.Len())
			p.Partial = true
			return p, nil
		}
	}
	return p, nil
}
