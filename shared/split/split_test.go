package split_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/csvrows"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/message"
	"github.com/massgov/bulk-user-import/shared/queue"
	"github.com/massgov/bulk-user-import/shared/source"
	"github.com/massgov/bulk-user-import/shared/split"
)

type fixture struct {
	stack *stacktest.Stack
	jobs  *jobs.Store
	queue *queue.Queue
	sp    *split.Splitter
}

func setup(t *testing.T) fixture {
	t.Helper()
	s := stacktest.New(t, stacktest.Options{})
	f := fixture{stack: s, jobs: jobs.NewStore(s.Pool), queue: queue.New(awsconf.SQS(s.AWS), s.Resources.QueueURL)}
	f.sp = &split.Splitter{Lifecycle: lifecycle.New(s.Pool, nil, logging.Discard()), Queue: f.queue, Opener: source.Opener{S3: awsconf.S3(s.AWS)}, Log: logging.Discard(), PageSize: 7}
	return f
}

func writeCSV(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func generated(n int) string {
	var b strings.Builder
	b.WriteString("fein,email\n")
	for i := range n {
		fmt.Fprintf(&b, "%09d,user%d@example.com\n", i%5+1, i)
	}
	return b.String()
}

// drain receives every message of the queue and returns the row numbers.
func (f fixture) drain(t *testing.T) []int64 {
	t.Helper()
	var rows []int64
	for {
		msgs, err := f.queue.Receive(context.Background(), 10, 0, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			return rows
		}
		for _, m := range msgs {
			r, err := message.Decode(m.Body)
			if err != nil {
				t.Fatalf("bad message %q: %v", m.Body, err)
			}
			rows = append(rows, r.Row)
		}
	}
}

func TestRunRecordsThenSendsOneMessagePerAcceptedRow(t *testing.T) {
	t.Parallel()
	f := setup(t)
	a := writeCSV(t, "a.csv", generated(40))
	b := writeCSV(t, "b.csv", "email,fein\nuser0@example.com,000000001\nbad,1\nnew@example.com,2\n")
	res, err := f.sp.Run(context.Background(), split.Options{Job: "j1", Sources: []string{a, b}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Created || res.Sent != 41 || len(res.Refused()) != 0 {
		t.Fatalf("result %+v", res)
	}
	if c := res.Sources[1].Counts; c != (jobs.SourceCounts{Rows: 3, Accepted: 1, Rejected: 1, Duplicates: 1}) {
		t.Fatalf("second source counts %+v", c)
	}
	rows := f.drain(t)
	if len(rows) != 41 {
		t.Fatalf("%d messages, want 41", len(rows))
	}
	seen := map[int64]bool{}
	for _, r := range rows {
		if seen[r] {
			t.Fatalf("row %d sent twice", r)
		}
		seen[r] = true
	}
	st, err := f.jobs.Status(context.Background(), "j1")
	if err != nil || st.Total != 43 || st.Queued != 41 || st.Unsent != 0 || st.Rejected != 1 || st.Duplicate != 1 {
		t.Fatalf("status %+v, %v", st, err)
	}
}

func TestRefusedSourceIsReportedAndOthersGoOn(t *testing.T) {
	t.Parallel()
	f := setup(t)
	good := writeCSV(t, "good.csv", generated(3))
	bad := writeCSV(t, "bad.csv", "name,mail\nx,y\n")
	res, err := f.sp.Run(context.Background(), split.Options{Job: "j1", Sources: []string{bad, filepath.Join(t.TempDir(), "missing.csv"), good}})
	if err != nil {
		t.Fatal(err)
	}
	refused := res.Refused()
	if len(refused) != 2 || !strings.Contains(refused[0].Err.Error(), "bad.csv") || !strings.Contains(refused[0].Err.Error(), "lacks the column(s) fein, email") {
		t.Fatalf("refused %+v", refused)
	}
	if !strings.Contains(refused[1].Err.Error(), "missing.csv") {
		t.Fatalf("missing file error %v", refused[1].Err)
	}
	if res.Sent != 3 {
		t.Fatalf("sent %d", res.Sent)
	}
}

// flakySender sends the first n batches, then fails: a crash mid-send.
type flakySender struct {
	q     *queue.Queue
	left  atomic.Int64
	calls atomic.Int64
}

func (s *flakySender) SendBatch(ctx context.Context, e []queue.Entry) ([]queue.EntryError, error) {
	s.calls.Add(1)
	if s.left.Add(-1) < 0 {
		return nil, errors.New("connection reset")
	}
	return s.q.SendBatch(ctx, e)
}

func TestRerunAfterACrashSendsOnlyWhatWasNotSent(t *testing.T) {
	t.Parallel()
	f := setup(t)
	src := writeCSV(t, "a.csv", generated(95))
	flaky := &flakySender{q: f.queue}
	flaky.left.Store(3)
	crashing := *f.sp
	crashing.Queue = flaky
	crashing.SendConcurrency = 1
	if _, err := crashing.Run(context.Background(), split.Options{Job: "j1", Sources: []string{src}}); err == nil {
		t.Fatal("want the send error")
	}
	st, _ := f.jobs.Status(context.Background(), "j1")
	if st.Total != 95 || st.Unsent == 0 || st.Unsent == 95 {
		t.Fatalf("after the crash: %+v", st)
	}
	res, err := f.sp.Run(context.Background(), split.Options{Job: "j1", Sources: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Created || !res.Sources[0].Skipped || res.Sent != st.Unsent {
		t.Fatalf("re-run %+v (unsent was %d)", res, st.Unsent)
	}
	rows := f.drain(t)
	seen := map[int64]bool{}
	for _, r := range rows {
		if seen[r] {
			t.Fatalf("row %d sent twice", r)
		}
		seen[r] = true
	}
	if len(seen) != 95 {
		t.Fatalf("%d distinct rows sent, want 95", len(seen))
	}
	st, _ = f.jobs.Status(context.Background(), "j1")
	if st.Total != 95 || st.Unsent != 0 {
		t.Fatalf("after the re-run: %+v", st)
	}
}

func TestSourceFromS3(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, err := awsconf.S3(f.stack.AWS).PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: &f.stack.Resources.SourceBucket, Key: stringPtr("in/leave admins.csv"), Body: bytes.NewReader([]byte(generated(12))),
	})
	if err != nil {
		t.Fatal(err)
	}
	src := "s3://" + f.stack.Resources.SourceBucket + "/in/leave admins.csv"
	res, err := f.sp.Run(context.Background(), split.Options{Job: "j1", Sources: []string{src, "s3://" + f.stack.Resources.SourceBucket + "/nope.csv"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 12 || res.Sources[0].Source != src || len(res.Refused()) != 1 {
		t.Fatalf("result %+v", res)
	}
}

func TestSameSourceTwiceInOneRunIsReadOnce(t *testing.T) {
	t.Parallel()
	f := setup(t)
	src := writeCSV(t, "a.csv", generated(4))
	rel, err := filepath.Rel(mustGetwd(t), src)
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.sp.Run(context.Background(), split.Options{Job: "j1", Sources: []string{src, rel}})
	if err != nil || res.Sent != 4 || !res.Sources[1].Skipped {
		t.Fatalf("result %+v, %v", res, err)
	}
}

func TestDryRunWritesAndSendsNothing(t *testing.T) {
	t.Parallel()
	f := setup(t)
	a := writeCSV(t, "a.csv", "fein,email\n1,a@b.co\n1,A@B.CO\nx,c@d.co\n")
	b := writeCSV(t, "b.csv", "nothing useful\n")
	res, err := split.DryRun(context.Background(), source.Opener{}, []string{a, b}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if c := res.Sources[0].Counts; c != (jobs.SourceCounts{Rows: 3, Accepted: 1, Rejected: 1, Duplicates: 1}) {
		t.Fatalf("counts %+v", c)
	}
	if res.Sources[1].Err == nil || len(res.Rejects) != 1 || res.Rejects[0].Line != 4 || res.Rejects[0].Code != csvrows.CodeInvalidFEIN {
		t.Fatalf("result %+v", res)
	}
	if _, err := f.jobs.Status(context.Background(), "anything"); !errors.Is(err, jobs.ErrJobNotFound) {
		t.Fatalf("status: %v", err)
	}
	if rows := f.drain(t); len(rows) != 0 {
		t.Fatalf("%d messages sent", len(rows))
	}
}

func TestInvalidJobIDIsRefused(t *testing.T) {
	t.Parallel()
	f := setup(t)
	if _, err := f.sp.Run(context.Background(), split.Options{Job: "../x", Sources: []string{"a.csv"}}); err == nil {
		t.Fatal("bad job id accepted")
	}
}

func stringPtr(s string) *string { return &s }

func mustGetwd(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

// A job cancelled while its run reads a source is over: the run, which
// holds the job until it ends, completes it itself (no worker may be
// running to do it).
func TestARunCancelledWhileReadingCompletesTheJob(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	lc := f.sp.Lifecycle
	sp := *f.sp
	sp.Finisher = lc
	fifo := filepath.Join(t.TempDir(), "slow.csv")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	type result struct {
		res split.Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := sp.Run(ctx, split.Options{Job: "slow", Sources: []string{fifo}})
		done <- result{res, err}
	}()
	pipe, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pipe.Close()
	if _, err := pipe.WriteString("fein,email\n123456789,a@b.co\n"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); pgtest.Count(t, f.stack.Pool, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND state = 'active' AND query ILIKE 'copy %bulk_import_staging%from stdin%'`) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the run did not start copying the source")
		}
	}
	if _, err := lc.Cancel(ctx, "slow", "wrong file"); err != nil {
		t.Fatal(err)
	}
	pipe.Close()
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the run did not end")
	}
	if !errors.Is(r.err, jobs.ErrCancelled) {
		t.Fatalf("run: %v", r.err)
	}
	st, err := f.jobs.Status(ctx, "slow")
	if err != nil || !st.Done || st.CancelledAt == nil || st.Total != 0 {
		t.Fatalf("status %+v, %v: want done, cancelled, no rows", st, err)
	}
}
