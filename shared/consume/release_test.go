package consume

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/queue"
)

// recordingQueue records sends, deletes and visibility changes.
type recordingQueue struct {
	mu      sync.Mutex
	sent    []queue.Entry
	deleted []string
	visible []string
}

var _ Receiver = (*recordingQueue)(nil)

func (q *recordingQueue) Receive(context.Context, int, time.Duration, time.Duration) ([]queue.Message, error) {
	return nil, nil
}

func (q *recordingQueue) DeleteBatch(_ context.Context, handles []string) ([]queue.EntryError, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.deleted = append(q.deleted, handles...)
	return nil, nil
}

func (q *recordingQueue) ChangeVisibility(_ context.Context, h string, _ time.Duration) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.visible = append(q.visible, h)
	return nil
}

func (q *recordingQueue) ChangeVisibilityBatch(_ context.Context, hs []string, _ time.Duration) ([]queue.EntryError, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.visible = append(q.visible, hs...)
	return nil, nil
}

func (q *recordingQueue) Send(_ context.Context, e queue.Entry) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.sent = append(q.sent, e)
	return nil
}

// A handler that outlived the shutdown deadline releases its message after
// the acknowledger stopped: the message, due for its last attempt, is sent
// again as a fresh copy, and the original must still be deleted, or the
// row would have two messages.
func TestAReleaseAfterTheAcknowledgerStoppedDeletesTheOriginal(t *testing.T) {
	t.Parallel()
	q := &recordingQueue{}
	w := &Worker{Queue: q, Config: Config{MaxReceiveCount: 3}, Log: logging.Discard()}
	w.acks, w.ackStop = make(chan string, 1), make(chan struct{})
	w.ackStopped = true
	close(w.ackStop)
	w.release(context.Background(), queue.Message{ID: "m1", ReceiptHandle: "h1", ReceiveCount: 2, Body: "body"}, 0)
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.sent) != 1 || q.sent[0].Body != "body" {
		t.Fatalf("sent %+v, want one fresh copy", q.sent)
	}
	if len(q.deleted) != 1 || q.deleted[0] != "h1" {
		t.Fatalf("deleted %v, want the original", q.deleted)
	}
	if len(w.acks) != 0 {
		t.Fatal("the acknowledgement was left in a queue nobody reads")
	}
}

// Before the acknowledger stops, acknowledgements go to it.
func TestAnAcknowledgementGoesToTheAcknowledgerWhileItRuns(t *testing.T) {
	t.Parallel()
	q := &recordingQueue{}
	w := &Worker{Queue: q, Log: logging.Discard()}
	w.acks, w.ackStop = make(chan string, 1), make(chan struct{})
	w.ack("h2")
	if h := <-w.acks; h != "h2" || len(q.deleted) != 0 {
		t.Fatalf("ack went to %q, deleted %v", h, q.deleted)
	}
}
