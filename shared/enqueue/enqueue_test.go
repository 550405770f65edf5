package enqueue_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/csvrows"
	"github.com/massgov/bulk-user-import/shared/enqueue"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/message"
	"github.com/massgov/bulk-user-import/shared/queue"
)

func TestSendThenResendUnderTheJobsLock(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	ctx := context.Background()
	store := jobs.NewStore(s.Pool)
	lc := lifecycle.New(s.Pool, nil, logging.Discard())
	q := queue.New(awsconf.SQS(s.AWS), s.Resources.QueueURL)
	job, _, err := lc.Create(ctx, "j", true, jobs.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("fein,email\n")
	for i := range 25 {
		fmt.Fprintf(&b, "123456789,u%d@b.co\n", i)
	}
	r, _ := csvrows.NewReader("a.csv", strings.NewReader(b.String()))
	if _, err := lc.RecordSource(ctx, "j", "a.csv", r.Header(), r); err != nil {
		t.Fatal(err)
	}
	var progress []int64
	e := &enqueue.Enqueuer{Jobs: store, Book: lc, Queue: q, PageSize: 10, Progress: func(n int64) { progress = append(progress, n) }}
	if n, err := e.SendUnsent(ctx, job); err != nil || n != 25 {
		t.Fatalf("sent %d, %v", n, err)
	}
	if fmt.Sprint(progress) != "[10 20 25]" {
		t.Fatalf("progress %v", progress)
	}
	if n, err := e.SendUnsent(ctx, job); err != nil || n != 0 {
		t.Fatalf("sent again %d, %v", n, err)
	}
	drain := func() (rows []int64) {
		for {
			msgs, err := q.Receive(ctx, 10, 0, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) == 0 {
				return rows
			}
			for _, m := range msgs {
				row, err := message.Decode(m.Body)
				if err != nil || !row.ForceRegistration || row.Job != "j" {
					t.Fatalf("message %q: %v", m.Body, err)
				}
				rows = append(rows, row.Row)
			}
		}
	}
	if rows := drain(); len(rows) != 25 {
		t.Fatalf("%d messages", len(rows))
	}

	// A re-send while another process holds the job's lock is refused.
	unlock, err := store.Lock(ctx, "j")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Resend(ctx, job, jobs.Selection{}, false); !errors.Is(err, jobs.ErrJobBusy) {
		t.Fatalf("re-send under another's lock: %v", err)
	}
	// A dry run needs no lock and sends nothing.
	if n, err := e.Resend(ctx, job, jobs.Selection{}, true); err != nil || n != 25 {
		t.Fatalf("dry run %d, %v", n, err)
	}
	unlock()
	if rows := drain(); len(rows) != 0 {
		t.Fatalf("the dry run sent %d messages", len(rows))
	}
	if n, err := e.Resend(ctx, job, jobs.Selection{IdleFor: time.Hour}, false); err != nil || n != 0 {
		t.Fatalf("re-send of fresh rows %d, %v", n, err)
	}
	if n, err := e.Resend(ctx, job, jobs.Selection{}, false); err != nil || n != 25 {
		t.Fatalf("re-send %d, %v", n, err)
	}
	if rows := drain(); len(rows) != 25 {
		t.Fatalf("%d messages re-sent", len(rows))
	}
}

// faultySender refuses one entry of its first batch as the sender's fault
// and accepts the rest.
type faultySender struct {
	q       enqueue.Sender
	refused string // entry id refused
	once    sync.Once
}

func (f *faultySender) SendBatch(ctx context.Context, entries []queue.Entry) ([]queue.EntryError, error) {
	var failed []queue.EntryError
	f.once.Do(func() {
		var keep []queue.Entry
		for _, e := range entries {
			if e.ID == f.refused {
				failed = append(failed, queue.EntryError{ID: e.ID, Code: "InvalidParameterValue", Message: "refused", SenderFault: true})
				continue
			}
			keep = append(keep, e)
		}
		entries = keep
	})
	more, err := f.q.SendBatch(ctx, entries)
	return append(failed, more...), err
}

func TestEntriesAcceptedBesideARefusedOneAreRecordedSent(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	ctx := context.Background()
	store := jobs.NewStore(s.Pool)
	lc := lifecycle.New(s.Pool, nil, logging.Discard())
	q := queue.New(awsconf.SQS(s.AWS), s.Resources.QueueURL)
	job, _, err := lc.Create(ctx, "f", false, jobs.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("fein,email\n")
	for i := range 10 {
		fmt.Fprintf(&b, "123456789,u%d@b.co\n", i)
	}
	r, _ := csvrows.NewReader("a.csv", strings.NewReader(b.String()))
	if _, err := lc.RecordSource(ctx, "f", "a.csv", r.Header(), r); err != nil {
		t.Fatal(err)
	}
	e := &enqueue.Enqueuer{Jobs: store, Book: lc, Queue: &faultySender{q: q, refused: "4"}}
	n, err := e.SendUnsent(ctx, job)
	if err == nil || !strings.Contains(err.Error(), "refused message 4") {
		t.Fatalf("the refusal was not reported: %v", err)
	}
	if n != 9 {
		t.Fatalf("%d sent, want the 9 accepted", n)
	}
	// The nine accepted are recorded sent: a re-run sends only the refused one.
	if st, _ := store.Status(ctx, "f"); st.Unsent != 1 {
		t.Fatalf("%d rows unsent, want 1", st.Unsent)
	}
	if n, err := e.SendUnsent(ctx, job); err != nil || n != 1 {
		t.Fatalf("re-run sent %d, %v; want only the refused row", n, err)
	}
}
