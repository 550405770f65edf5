package dlq_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/csvrows"
	"github.com/massgov/bulk-user-import/shared/dlq"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/message"
	"github.com/massgov/bulk-user-import/shared/queue"
	"github.com/massgov/bulk-user-import/shared/results"
)

type fixture struct {
	stack      *stacktest.Stack
	jobs       *jobs.Store
	lc         *lifecycle.Lifecycle
	main, dead *queue.Queue
	tool       *dlq.Tool
}

func setup(t *testing.T) fixture {
	t.Helper()
	s := stacktest.New(t, stacktest.Options{})
	api := awsconf.SQS(s.AWS)
	f := fixture{stack: s, jobs: jobs.NewStore(s.Pool), main: queue.New(api, s.Resources.QueueURL), dead: queue.New(api, s.Resources.DLQURL)}
	f.lc = lifecycle.New(s.Pool, nil, logging.Discard())
	f.tool = &dlq.Tool{DLQ: f.dead, Main: f.main, Rows: f.lc, Log: logging.Discard(), Hold: 20 * time.Second, Wait: 500 * time.Millisecond}
	return f
}

// deadLetter records n failed rows of job and puts their messages in the
// DLQ as the worker would, with code.
func (f fixture) deadLetter(t *testing.T, job, code string, n int) {
	t.Helper()
	ctx := context.Background()
	if _, _, err := f.lc.Create(ctx, job, false, jobs.Limits{}); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("fein,email\n")
	for i := range n {
		fmt.Fprintf(&b, "123456789,%s-%s-%d@example.com\n", strings.ToLower(job), strings.ToLower(code), i)
	}
	name := "/in/" + job + "-" + code + ".csv"
	r, _ := csvrows.NewReader(name, strings.NewReader(b.String()))
	if _, err := f.lc.RecordSource(ctx, job, name, r.Header(), r); err != nil {
		t.Fatal(err)
	}
	if err := f.lc.MarkRecorded(ctx, job); err != nil {
		t.Fatal(err)
	}
	var base int64
	if err := f.stack.Pool.QueryRow(ctx, `SELECT max(row_no) FROM bulk_import_row WHERE job_id = $1`, job).Scan(&base); err != nil {
		t.Fatal(err)
	}
	base -= int64(n)
	for i := range n {
		row := base + int64(i) + 1
		var ri jobs.RowInfo
		pgtest.Batch(t, f.stack.Pool, func(b *pgx.Batch) { f.lc.QueueStartAttempt(b, job, row, 1, &ri) })
		body, _ := message.Encode(message.Row{Job: job, Row: row, Email: ri.Email, FEIN: ri.FEIN})
		if claimed, err := f.lc.ClaimFailure(ctx, job, row, code, "boom"); err != nil || !claimed {
			t.Fatal(claimed, err)
		}
		if err := f.dead.Send(ctx, queue.Entry{Body: body, Attributes: map[string]string{
			message.AttrErrorCode: code, message.AttrErrorMessage: "boom", message.AttrAttempts: "1",
			message.AttrFailedAt: "2026-11-29T10:00:00Z", message.AttrJob: job, message.AttrRow: fmt.Sprint(row),
		}}); err != nil {
			t.Fatal(err)
		}
		if err := f.lc.DeadLettered(ctx, job, row); err != nil {
			t.Fatal(err)
		}
	}
}

// contents receives every message of q, releases them, and returns
// "job/row code" strings, sorted.
func contents(t *testing.T, q *queue.Queue) []string {
	t.Helper()
	var out, handles []string
	defer func() {
		for len(handles) > 0 {
			n := min(len(handles), 10)
			if _, err := q.ChangeVisibilityBatch(context.Background(), handles[:n], 0); err != nil {
				t.Error(err)
			}
			handles = handles[n:]
		}
	}()
	for {
		msgs, err := q.Receive(context.Background(), 10, 0, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			sort.Strings(out)
			return out
		}
		for _, m := range msgs {
			handles = append(handles, m.ReceiptHandle)
			r, err := message.Decode(m.Body)
			if err != nil {
				out = append(out, "malformed "+m.Attributes[message.AttrErrorCode])
				continue
			}
			out = append(out, fmt.Sprintf("%s/%d %s", r.Job, r.Row, m.Attributes[message.AttrErrorCode]))
		}
	}
}

func TestListConsumesNothingAndReleasesAtOnce(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.deadLetter(t, "A", "EMPLOYER_NOT_FOUND", 12)
	f.deadLetter(t, "B", "EMAIL_CONFLICT", 3)
	if err := f.dead.Send(ctx, queue.Entry{Body: "garbage", Attributes: map[string]string{message.AttrErrorCode: message.CodeMalformedMessage}}); err != nil {
		t.Fatal(err)
	}
	body, _ := message.Encode(message.Row{Job: "A", Row: 99, Email: "x@y.co", FEIN: "123456789"})
	if err := f.dead.Send(ctx, queue.Entry{Body: body}); err != nil { // moved by SQS: no attributes
		t.Fatal(err)
	}
	l, err := f.tool.List(ctx, dlq.Filter{}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if l.Seen != 17 || l.Matching != 17 || len(l.Groups) != 4 || l.Groups[0].Code != "EMPLOYER_NOT_FOUND" || l.Groups[0].Count != 12 {
		t.Fatalf("listing %+v", l)
	}
	for _, g := range l.Groups {
		if len(g.Samples) > 2 {
			t.Fatalf("%d samples for %s", len(g.Samples), g.Code)
		}
		if g.Code == message.CodeRedriven && (g.Samples[0].Job != "A" || g.Samples[0].Row != 99 || g.Samples[0].Email != "x***@***.co") {
			t.Fatalf("redriven sample %+v", g.Samples[0])
		}
	}
	if s := l.Groups[0].Samples[0]; s.Job != "A" || s.Attempts != "1" || s.FailedAt == "" || strings.Contains(s.Email, "example.com") || s.FEIN != "*****6789" {
		t.Fatalf("sample %+v", s)
	}
	filtered, err := f.tool.List(ctx, dlq.Filter{Job: "B"}, 5)
	if err != nil || filtered.Matching != 3 || filtered.Seen != 17 {
		t.Fatalf("filtered %+v, %v", filtered, err)
	}
	// Everything is still there, and visible right away.
	if got := contents(t, f.dead); len(got) != 17 {
		t.Fatalf("%d messages after listing, want 17: %v", len(got), got)
	}
}

func TestReplayMovesOnlyTheMatchingMessages(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.deadLetter(t, "A", "EMPLOYER_NOT_FOUND", 5)
	f.deadLetter(t, "A", "FINEOS_UNAVAILABLE", 2)
	f.deadLetter(t, "B", "EMPLOYER_NOT_FOUND", 3)

	dry, err := f.tool.Replay(ctx, dlq.ReplayOptions{Filter: dlq.Filter{Job: "A", Code: "EMPLOYER_NOT_FOUND"}, DryRun: true})
	if err != nil || dry.Moved != 5 || dry.Skipped != 5 {
		t.Fatalf("dry run %+v, %v", dry, err)
	}
	if got := contents(t, f.main); len(got) != 0 {
		t.Fatalf("dry run moved %v", got)
	}
	if st, _ := f.jobs.Status(ctx, "A"); st.Failed != 7 {
		t.Fatalf("dry run changed rows: %+v", st)
	}

	res, err := f.tool.Replay(ctx, dlq.ReplayOptions{Filter: dlq.Filter{Job: "A", Code: "EMPLOYER_NOT_FOUND"}})
	if err != nil || res.Moved != 5 || res.Errors != 0 || res.ByCode["EMPLOYER_NOT_FOUND"] != 5 {
		t.Fatalf("replay %+v, %v", res, err)
	}
	moved := contents(t, f.main)
	if len(moved) != 5 || !strings.HasPrefix(moved[0], "A/1 ") || !strings.HasPrefix(moved[4], "A/5 ") {
		t.Fatalf("import queue holds %v", moved)
	}
	left := contents(t, f.dead)
	if strings.Join(left, ",") != "A/6 FINEOS_UNAVAILABLE,A/7 FINEOS_UNAVAILABLE,B/1 EMPLOYER_NOT_FOUND,B/2 EMPLOYER_NOT_FOUND,B/3 EMPLOYER_NOT_FOUND" {
		t.Fatalf("DLQ holds %v", left)
	}
	st, _ := f.jobs.Status(ctx, "A")
	if st.Queued != 5 || st.Failed != 2 {
		t.Fatalf("rows after replay: %+v", st)
	}
	var replays int
	if err := f.stack.Pool.QueryRow(ctx, `SELECT sum(replays) FROM bulk_import_row WHERE job_id = 'A'`).Scan(&replays); err != nil || replays != 5 {
		t.Fatalf("replay counts %d, %v", replays, err)
	}
}

func TestReplayHonoursLimitAndSkipsMalformedAndCancelled(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.deadLetter(t, "A", "EMPLOYER_NOT_FOUND", 6)
	f.deadLetter(t, "C", "EMPLOYER_NOT_FOUND", 2)
	if _, err := lifecycle.New(f.stack.Pool, &results.Publisher{Jobs: f.jobs}, logging.Discard()).Cancel(ctx, "C", "wrong file"); err != nil {
		t.Fatal(err)
	}
	if err := f.dead.Send(ctx, queue.Entry{Body: "garbage", Attributes: map[string]string{message.AttrErrorCode: message.CodeMalformedMessage}}); err != nil {
		t.Fatal(err)
	}
	res, err := f.tool.Replay(ctx, dlq.ReplayOptions{Limit: 4})
	if err != nil || res.Moved != 4 || !res.Partial {
		t.Fatalf("limited replay %+v, %v", res, err)
	}
	res, err = f.tool.Replay(ctx, dlq.ReplayOptions{})
	if err != nil || res.Moved != 2 {
		t.Fatalf("second replay %+v, %v", res, err)
	}
	notes := strings.Join(res.Notes, "\n")
	if !strings.Contains(notes, "malformed messages are not replayed") || !strings.Contains(notes, "job is cancelled") {
		t.Fatalf("notes %q", notes)
	}
	if left := contents(t, f.dead); len(left) != 3 {
		t.Fatalf("DLQ holds %v; want the cancelled job's two and the malformed one", left)
	}
	if got := contents(t, f.main); len(got) != 6 {
		t.Fatalf("import queue holds %v", got)
	}
}

func TestInterruptedReplayLosesNothing(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.deadLetter(t, "A", "EMPLOYER_NOT_FOUND", 20)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	first, _ := f.tool.Replay(ctx, dlq.ReplayOptions{Rate: 5})
	if first.Moved == 0 || first.Moved >= 20 {
		t.Fatalf("the first replay moved %d; the test wants it stopped midway", first.Moved)
	}
	second, err := f.tool.Replay(context.Background(), dlq.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if first.Moved+second.Moved != 20 {
		t.Fatalf("moved %d then %d, want 20 in all", first.Moved, second.Moved)
	}
	got := contents(t, f.main)
	seen := map[string]bool{}
	for _, m := range got {
		seen[m] = true
	}
	if len(seen) != 20 {
		t.Fatalf("import queue holds %d distinct rows, want 20", len(seen))
	}
	if left := contents(t, f.dead); len(left) != 0 {
		t.Fatalf("DLQ still holds %v", left)
	}
}

func TestPurgeNeedsYesAndMarksRowsFailedForGood(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.deadLetter(t, "A", "EMPLOYER_NOT_FOUND", 3)
	f.deadLetter(t, "B", "EMPLOYER_NOT_FOUND", 2)
	res, err := f.tool.Purge(ctx, "A", false)
	if err != nil || res.Deleted != 3 || res.RowsFailed != 0 {
		t.Fatalf("purge without yes %+v, %v", res, err)
	}
	if left := contents(t, f.dead); len(left) != 5 {
		t.Fatalf("purge without yes deleted: %v", left)
	}
	res, err = f.tool.Purge(ctx, "A", true)
	if err != nil || res.Deleted != 3 || res.RowsFailed != 3 {
		t.Fatalf("purge %+v, %v", res, err)
	}
	if left := contents(t, f.dead); len(left) != 2 {
		t.Fatalf("DLQ holds %v", left)
	}
	var purged int
	if err := f.stack.Pool.QueryRow(ctx, `SELECT count(*) FROM bulk_import_row WHERE job_id = 'A' AND state = 'failed' AND purged_at IS NOT NULL
		AND error_message LIKE '%purged%'`).Scan(&purged); err != nil || purged != 3 {
		t.Fatalf("%d purged rows, %v", purged, err)
	}
	if q, err := f.lc.Requeue(ctx, "A", []int64{1, 2, 3}); err != nil || len(q) != 0 {
		t.Fatalf("purged rows requeued: %v %v", q, err)
	}
}

// fill puts n messages of job in the DLQ quickly (no rows recorded).
func (f fixture) fill(t *testing.T, job string, n int) {
	t.Helper()
	var entries []queue.Entry
	for i := range n {
		body, _ := message.Encode(message.Row{Job: job, Row: int64(i + 1), Email: fmt.Sprintf("u%d@example.com", i), FEIN: "123456789"})
		entries = append(entries, queue.Entry{ID: fmt.Sprint(i), Body: body, Attributes: map[string]string{
			message.AttrErrorCode: "EMPLOYER_NOT_FOUND", message.AttrJob: job, message.AttrRow: fmt.Sprint(i + 1)}})
	}
	batches, _ := queue.Batches(entries)
	for _, b := range batches {
		if failed, err := f.dead.SendBatch(context.Background(), b); err != nil || len(failed) > 0 {
			t.Fatal(err, failed)
		}
	}
}

func TestListPagesThroughThousandsOfMessages(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.fill(t, "big", 2500)
	l, err := f.tool.List(context.Background(), dlq.Filter{}, 3)
	if err != nil || l.Seen != 2500 || l.Groups[0].Count != 2500 || l.Partial {
		t.Fatalf("listing %+v, %v", l.Pass, err)
	}
	if got := contents(t, f.dead); len(got) != 2500 {
		t.Fatalf("%d messages after listing, want 2500", len(got))
	}
	// Past the bound, a pass stops and says it is partial.
	small := *f.tool
	small.MaxHeld = 100
	l, err = small.List(context.Background(), dlq.Filter{}, 3)
	if err != nil || !l.Partial || l.Seen < 100 || l.Seen > 110 {
		t.Fatalf("bounded listing %+v, %v", l.Pass, err)
	}
}

func TestTwoOperatorsReplayingAtOnceMoveEachMessageOnce(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.deadLetter(t, "A", "EMPLOYER_NOT_FOUND", 60)
	results := make(chan dlq.ReplayResult, 2)
	for range 2 {
		go func() {
			r, err := f.tool.Replay(context.Background(), dlq.ReplayOptions{})
			if err != nil {
				t.Error(err)
			}
			results <- r
		}()
	}
	a, b := <-results, <-results
	if a.Moved+b.Moved != 60 {
		t.Fatalf("moved %d and %d, want 60 in all", a.Moved, b.Moved)
	}
	got := contents(t, f.main)
	seen := map[string]bool{}
	for _, m := range got {
		if seen[m] {
			t.Fatalf("%s moved twice", m)
		}
		seen[m] = true
	}
	if len(seen) != 60 {
		t.Fatalf("%d distinct messages in the import queue, want 60", len(seen))
	}
}

// failingSender refuses every batch.
type failingSender struct{}

func (failingSender) SendBatch(context.Context, []queue.Entry) ([]queue.EntryError, error) {
	return nil, errors.New("injected: the import queue is unreachable")
}

// rowState reads a row's state, attempts and dead letter.
func (f fixture) rowState(t *testing.T, job string, row int64) (state string, attempts int, deadLetter string) {
	t.Helper()
	if err := f.stack.Pool.QueryRow(context.Background(), `SELECT state, attempts, coalesce(dead_letter, '') FROM bulk_import_row WHERE job_id = $1 AND row_no = $2`,
		job, row).Scan(&state, &attempts, &deadLetter); err != nil {
		t.Fatal(err)
	}
	return state, attempts, deadLetter
}

func TestAReplayedRowStartsItsAttemptsAgain(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.deadLetter(t, "A", "EMPLOYER_NOT_FOUND", 2)
	// Row 2 failed on its last attempt (as a transient error that gave up).
	if _, err := f.stack.Pool.Exec(ctx, `UPDATE bulk_import_row SET attempts = 3 WHERE job_id = 'A'`); err != nil {
		t.Fatal(err)
	}
	if r, err := f.tool.Replay(ctx, dlq.ReplayOptions{}); err != nil || r.Moved != 2 {
		t.Fatalf("replay %+v, %v", r, err)
	}
	for row := int64(1); row <= 2; row++ {
		if state, attempts, _ := f.rowState(t, "A", row); state != jobs.Queued || attempts != 0 {
			t.Fatalf("row %d: %s with %d attempts; want queued, attempts starting again", row, state, attempts)
		}
	}
	// So, should the replayed messages be lost, the maintainer's rescuer
	// finds the rows (rows with used-up attempts it would leave to the
	// dead-letter queue's retention, 14 days).
	if _, err := f.stack.Pool.Exec(ctx, `UPDATE bulk_import_row SET updated_at = now() - interval '2 hours', sent_at = now() - interval '2 hours' WHERE job_id = 'A'`); err != nil {
		t.Fatal(err)
	}
	byJob, err := f.jobs.JobsToResend(ctx, jobs.Selection{IdleFor: time.Hour, MaxAttempts: 3, RedrivenIdleFor: 14 * 24 * time.Hour})
	if err != nil || byJob["A"] != 2 {
		t.Fatalf("rows the rescuer would re-send: %v, %v", byJob, err)
	}
}

func TestAReplayWhoseSendFailsPutsTheRowsBack(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.deadLetter(t, "A", "EMPLOYER_NOT_FOUND", 3)
	if _, err := f.stack.Pool.Exec(ctx, `UPDATE bulk_import_row SET attempts = 3 WHERE job_id = 'A'`); err != nil {
		t.Fatal(err)
	}
	tool := *f.tool
	tool.Main = failingSender{}
	r, err := tool.Replay(ctx, dlq.ReplayOptions{})
	if err != nil || r.Moved != 0 || r.Errors != 3 {
		t.Fatalf("replay %+v, %v", r, err)
	}
	// Nothing half-done: the rows are failed as before, their dead letters
	// still in the dead-letter queue (the job, reopened by the requeue,
	// completes again, with the same files).
	for row := int64(1); row <= 3; row++ {
		if state, attempts, dl := f.rowState(t, "A", row); state != jobs.Failed || attempts != 3 || dl != jobs.DeadLetterSent {
			t.Fatalf("row %d: %s, %d attempts, dead letter %q; want failed, 3, sent", row, state, attempts, dl)
		}
	}
	if got := contents(t, f.dead); len(got) != 3 {
		t.Fatalf("dead-letter queue %v", got)
	}
	if got := contents(t, f.main); len(got) != 0 {
		t.Fatalf("import queue %v", got)
	}
	// A later replay moves them.
	if r, err := f.tool.Replay(ctx, dlq.ReplayOptions{}); err != nil || r.Moved != 3 {
		t.Fatalf("second replay %+v, %v", r, err)
	}
}

// staleDLQ answers the deletes of the first n handles as stale: the pass
// lost its hold on those messages, which stay in the queue.
type staleDLQ struct {
	*queue.Queue
	n int
}

func (s *staleDLQ) DeleteBatch(ctx context.Context, handles []string) ([]queue.EntryError, error) {
	var failed []queue.EntryError
	var keep []string
	for i, h := range handles {
		if s.n > 0 {
			s.n--
			failed = append(failed, queue.EntryError{ID: strconv.Itoa(i), Code: "ReceiptHandleIsInvalid", Message: "stale"})
			continue
		}
		keep = append(keep, h)
	}
	more, err := s.Queue.DeleteBatch(ctx, keep)
	return append(failed, more...), err
}

func TestAMessageWhoseDeleteFindsAStaleHandleIsNotCountedMoved(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.deadLetter(t, "A", "EMPLOYER_NOT_FOUND", 3)
	tool := *f.tool
	tool.DLQ = &staleDLQ{Queue: f.dead, n: 1}
	r, err := tool.Replay(ctx, dlq.ReplayOptions{})
	if err != nil || r.Moved != 2 || r.Errors != 1 {
		t.Fatalf("replay %+v, %v: want 2 moved, the stale one an error", r, err)
	}
	if !slices.ContainsFunc(r.Notes, func(n string) bool { return strings.Contains(n, "stale receipt handle") }) {
		t.Fatalf("notes %v", r.Notes)
	}
	if got := contents(t, f.dead); len(got) != 1 {
		t.Fatalf("dead-letter queue %v: the stale one stays", got)
	}
}

// lostHoldDLQ loses the pass's hold on the first message it hands out:
// another consumer received it meanwhile, so SQS refuses visibility
// changes with the pass's (now stale) receipt handle.
type lostHoldDLQ struct {
	*queue.Queue
	mu   sync.Mutex
	lost string // the receipt handle
}

func (l *lostHoldDLQ) Receive(ctx context.Context, n int, wait, visibility time.Duration) ([]queue.Message, error) {
	msgs, err := l.Queue.Receive(ctx, n, wait, visibility)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost == "" && len(msgs) > 0 {
		l.lost = msgs[0].ReceiptHandle
	}
	return msgs, err
}

func (l *lostHoldDLQ) ChangeVisibilityBatch(ctx context.Context, handles []string, d time.Duration) ([]queue.EntryError, error) {
	l.mu.Lock()
	lost := l.lost
	l.mu.Unlock()
	var failed []queue.EntryError
	var keep []string
	var index []int // of each kept handle in handles
	for i, h := range handles {
		if h == lost {
			failed = append(failed, queue.EntryError{ID: strconv.Itoa(i), Code: "ReceiptHandleIsInvalid", Message: "stale"})
			continue
		}
		keep, index = append(keep, h), append(index, i)
	}
	more, err := l.Queue.ChangeVisibilityBatch(ctx, keep, d)
	for _, f := range more {
		k, _ := strconv.Atoi(f.ID)
		f.ID = strconv.Itoa(index[k])
		failed = append(failed, f)
	}
	return failed, err
}

func TestAMessageWhoseHoldWasLostIsNotMoved(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.deadLetter(t, "A", "EMPLOYER_NOT_FOUND", 3)
	tool := *f.tool
	tool.DLQ = &lostHoldDLQ{Queue: f.dead}
	r, err := tool.Replay(ctx, dlq.ReplayOptions{})
	if err != nil || r.Moved != 2 || r.Errors != 1 {
		t.Fatalf("replay %+v, %v: want 2 moved, the one whose hold was lost an error", r, err)
	}
	if got := contents(t, f.main); len(got) != 2 {
		t.Fatalf("import queue %v: the lost one must not be sent", got)
	}
	failed := 0
	for row := int64(1); row <= 3; row++ {
		if state, _, dl := f.rowState(t, "A", row); state == jobs.Failed && dl == jobs.DeadLetterSent {
			failed++
		}
	}
	if failed != 1 {
		t.Fatalf("%d rows left failed with their dead letter, want the lost one's", failed)
	}
}

// failingRows fails the requeue of one job's rows.
type failingRows struct {
	dlq.Rows
	job string
}

func (f failingRows) Requeue(ctx context.Context, jobID string, rows []int64) ([]lifecycle.Requeued, error) {
	if jobID == f.job {
		return nil, errors.New("injected: the database went away")
	}
	return f.Rows.Requeue(ctx, jobID, rows)
}

func TestAReplayWhoseRequeueFailsPutsBackTheRowsItRequeued(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.deadLetter(t, "A", "EMPLOYER_NOT_FOUND", 2)
	f.deadLetter(t, "B", "EMPLOYER_NOT_FOUND", 2)
	tool := *f.tool
	tool.Rows = failingRows{Rows: f.lc, job: "B"}
	if _, err := tool.Replay(ctx, dlq.ReplayOptions{}); err == nil {
		t.Fatal("the failed requeue was not reported")
	}
	// Nothing lost or half-done: each row is failed with its dead letter
	// still in the DLQ (job A's, requeued before B's failed, were put
	// back), or queued with its message in the import queue (moved in an
	// earlier batch).
	inMain, inDLQ := map[string]bool{}, map[string]bool{}
	for _, m := range contents(t, f.main) {
		inMain[strings.Fields(m)[0]] = true
	}
	for _, m := range contents(t, f.dead) {
		inDLQ[strings.Fields(m)[0]] = true
	}
	for _, job := range []string{"A", "B"} {
		for row := int64(1); row <= 2; row++ {
			key := fmt.Sprintf("%s/%d", job, row)
			state, _, dl := f.rowState(t, job, row)
			switch {
			case state == jobs.Failed && dl == jobs.DeadLetterSent && inDLQ[key] && !inMain[key]:
			case state == jobs.Queued && inMain[key] && !inDLQ[key]:
			default:
				t.Fatalf("row %s: %s, dead letter %q, in the import queue %v, in the DLQ %v", key, state, dl, inMain[key], inDLQ[key])
			}
		}
	}
}
