package maintain_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/jackc/pgx/v5"

	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/enqueue"
	"github.com/massgov/bulk-user-import/shared/fleet"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/maintain"
	"github.com/massgov/bulk-user-import/shared/message"
	"github.com/massgov/bulk-user-import/shared/metrics"
	"github.com/massgov/bulk-user-import/shared/queue"
	"github.com/massgov/bulk-user-import/shared/results"
	"github.com/massgov/bulk-user-import/shared/source"
	"github.com/massgov/bulk-user-import/shared/split"
)

type fixture struct {
	stack *stacktest.Stack
	store *jobs.Store
	queue *queue.Queue
}

func setup(t *testing.T) fixture {
	t.Helper()
	s := stacktest.New(t, stacktest.Options{})
	return fixture{stack: s, store: jobs.NewStore(s.Pool), queue: queue.New(awsconf.SQS(s.AWS), s.Resources.QueueURL)}
}

func (f fixture) lc() *lifecycle.Lifecycle {
	return lifecycle.New(f.stack.Pool, nil, logging.Discard())
}

// maintainer returns a maintainer of the fixture's stack with cfg.
func (f fixture) maintainer(cfg maintain.Config) *maintain.Maintainer {
	lc := lifecycle.New(f.stack.Pool, &results.Publisher{Jobs: f.store, S3: awsconf.S3(f.stack.AWS), Bucket: f.stack.Resources.ResultsBucket}, logging.Discard())
	return &maintain.Maintainer{
		Config:    cfg,
		Elector:   maintain.NewElector(f.stack.Pool, maintain.LeaseName, fleet.NewID(), cfg.Lease, logging.Discard()),
		Lifecycle: lc,
		Jobs:      f.store,
		Queue:     f.queue,
		Enqueuer:  &enqueue.Enqueuer{Jobs: f.store, Book: lc, Queue: f.queue},
		Log:       logging.Discard(),
		Metrics:   &metrics.Worker{},
	}
}

// split records and sends a CSV of n rows as job.
func (f fixture) split(t *testing.T, job string, n int) {
	t.Helper()
	var b strings.Builder
	b.WriteString("fein,email\n")
	for i := range n {
		fmt.Fprintf(&b, "123456789,%s-%d@b.co\n", job, i)
	}
	path := t.TempDir() + "/rows.csv"
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	sp := &split.Splitter{Lifecycle: lifecycle.New(f.stack.Pool, nil, logging.Discard()), Queue: f.queue, Opener: source.Opener{}, Log: logging.Discard()}
	if _, err := sp.Run(context.Background(), split.Options{Job: job, Sources: []string{path}}); err != nil {
		t.Fatal(err)
	}
}

// drain receives (and deletes) every message of the queue; it returns the
// rows, sorted.
func (f fixture) drain(t *testing.T) []int64 {
	t.Helper()
	ctx := context.Background()
	var rows []int64
	for {
		msgs, err := f.queue.Receive(ctx, 10, 0, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			slices.Sort(rows)
			return rows
		}
		var handles []string
		for _, m := range msgs {
			r, err := message.Decode(m.Body)
			if err != nil {
				t.Fatal(err)
			}
			rows = append(rows, r.Row)
			handles = append(handles, m.ReceiptHandle)
		}
		if _, err := f.queue.DeleteBatch(ctx, handles); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOneLeaderAtATimeAndAResignedOrDeadLeaderIsReplaced(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	const lease = 600 * time.Millisecond
	var electors []*maintain.Elector
	for range 4 {
		electors = append(electors, maintain.NewElector(f.stack.Pool, "test-lease", fleet.NewID(), lease, logging.Discard()))
	}
	leaders := func() []int {
		var out []int
		for i, e := range electors {
			if e.IsLeader() {
				out = append(out, i)
			}
		}
		return out
	}
	// All try at once, many times: one wins, and keeps winning.
	for round := range 5 {
		var wg sync.WaitGroup
		for _, e := range electors {
			wg.Go(func() { e.Attempt(ctx) })
		}
		wg.Wait()
		if l := leaders(); len(l) != 1 || (round > 0 && l[0] != leaders()[0]) {
			t.Fatalf("round %d: leaders %v", round, l)
		}
	}
	first := leaders()[0]
	id, live, ok, err := maintain.Leader(ctx, f.stack.Pool, "test-lease")
	if err != nil || !ok || !live || id != electors[first].ID() {
		t.Fatalf("lease row: %s %v %v %v; want %s", id, live, ok, err, electors[first].ID())
	}

	// The leader resigns: another takes over at its next attempt.
	electors[first].Resign(ctx)
	var second int = -1
	for i, e := range electors {
		if i != first && e.Attempt(ctx) {
			second = i
			break
		}
	}
	if second < 0 || slices.Contains(leaders(), first) {
		t.Fatalf("after resigning: leaders %v", leaders())
	}

	// The new leader dies (stops renewing): nobody else wins before its
	// lease ends, somebody does after.
	for i, e := range electors {
		if i != second && e.Attempt(ctx) {
			t.Fatalf("elector %d won a live lease", i)
		}
	}
	time.Sleep(lease + 100*time.Millisecond)
	if electors[second].IsLeader() {
		t.Fatal("a leader that did not renew still thinks it leads")
	}
	var third int = -1
	for i, e := range electors {
		if i != second && e.Attempt(ctx) {
			third = i
			break
		}
	}
	if third < 0 {
		t.Fatal("nobody took over an expired lease")
	}
	if electors[second].Attempt(ctx) {
		t.Fatal("the old leader took its lease back from a live one")
	}
	if electors[third].Term() != 1 {
		t.Fatalf("term %d", electors[third].Term())
	}
}

func TestTheLeadersTickCompletesJobsAndWritesTheirFiles(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	for j := range 3 {
		job := fmt.Sprintf("t-%d", j)
		f.split(t, job, 4)
		rows := f.drain(t)
		pgtest.Batch(t, f.stack.Pool, func(b *pgx.Batch) {
			for _, r := range rows {
				f.lc().QueueSucceed(b, job, r)
			}
		})
	}
	follower := f.maintainer(maintain.Config{RecoverAfter: time.Hour, Lease: time.Minute})
	leader := f.maintainer(maintain.Config{RecoverAfter: time.Hour, Lease: time.Minute})
	if !leader.Elector.Attempt(ctx) || follower.Elector.Attempt(ctx) {
		t.Fatal("election")
	}
	follower.Tick(ctx)
	if st, _ := f.store.Status(ctx, "t-0"); st.Done {
		t.Fatal("a follower completed a job")
	}
	leader.Tick(ctx)
	for j := range 3 {
		st, err := f.store.Status(ctx, fmt.Sprintf("t-%d", j))
		if err != nil || !st.Done || st.Results != jobs.ResultsWritten {
			t.Fatalf("job t-%d after the leader's tick: %+v, %v", j, st, err)
		}
	}
	if s := leader.Metrics.Snapshot(time.Now()); s.JobsCompleted != 3 || s.ResultsWritten != 3 || s.Leader != 1 {
		t.Fatalf("metrics %+v", s)
	}
}

func TestTheRescuerResendsRowsWhoseMessagesWereLost(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.split(t, "lost", 12)
	// Row 1 is finished; row 2 used up its attempts (SQS moved its message
	// to the DLQ); then the queue is purged.
	pgtest.Batch(t, f.stack.Pool, func(b *pgx.Batch) { f.lc().QueueSucceed(b, "lost", 1) })
	if _, err := f.stack.Pool.Exec(ctx, `UPDATE bulk_import_row SET attempts = 3 WHERE job_id = 'lost' AND row_no = 2`); err != nil {
		t.Fatal(err)
	}
	if _, err := awsconf.SQS(f.stack.AWS).PurgeQueue(ctx, &sqs.PurgeQueueInput{QueueUrl: &f.stack.Resources.QueueURL}); err != nil {
		t.Fatal(err)
	}
	const bound = 800 * time.Millisecond
	m := f.maintainer(maintain.Config{RecoverAfter: bound, Lease: time.Minute, Interval: 100 * time.Millisecond,
		MaxReceiveCount: 3, DLQRetention: time.Hour})
	if !m.Elector.Attempt(ctx) {
		t.Fatal("not elected")
	}
	// Within the bound nothing is re-sent.
	m.Tick(ctx)
	time.Sleep(bound / 2)
	m.Tick(ctx)
	if got := f.drain(t); len(got) != 0 {
		t.Fatalf("re-sent within the bound: %v", got)
	}
	for deadline := time.Now().Add(5 * time.Second); m.Metrics.RowsResent.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		m.Tick(ctx)
	}
	got := f.drain(t)
	want := []int64{3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	if !slices.Equal(got, want) {
		t.Fatalf("re-sent rows %v, want %v (not the finished row, not the one in the DLQ)", got, want)
	}
	var resends int
	if err := f.stack.Pool.QueryRow(ctx, `SELECT sum(resends) FROM bulk_import_row WHERE job_id = 'lost'`).Scan(&resends); err != nil || resends != len(want) {
		t.Fatalf("resends %d, %v", resends, err)
	}
	// Re-sent rows are fresh again: nothing more is sent at the next tick.
	m.Tick(ctx)
	if got := f.drain(t); len(got) != 0 {
		t.Fatalf("re-sent twice: %v", got)
	}
}

func TestTheRescuerWaitsWhileTheQueueHasABacklog(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.split(t, "backlog", 5)
	if _, err := f.stack.Pool.Exec(ctx, `UPDATE bulk_import_row SET sent_at = now() - interval '1 hour', updated_at = now() - interval '1 hour'`); err != nil {
		t.Fatal(err)
	}
	m := f.maintainer(maintain.Config{RecoverAfter: 200 * time.Millisecond, Lease: time.Minute, Interval: 50 * time.Millisecond})
	if !m.Elector.Attempt(ctx) {
		t.Fatal("not elected")
	}
	for range 8 {
		m.Tick(ctx)
		time.Sleep(50 * time.Millisecond)
	}
	if n := m.Metrics.RowsResent.Load(); n != 0 {
		t.Fatalf("%d rows re-sent while their messages waited in the queue", n)
	}
	if got := f.drain(t); len(got) != 5 {
		t.Fatalf("queue %v", got)
	}
}

func TestRetentionDeletesOnlyOldFinishedJobsRowData(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	for _, job := range []string{"old", "recent", "running"} {
		f.split(t, job, 3)
	}
	f.drain(t)
	pgtest.Batch(t, f.stack.Pool, func(b *pgx.Batch) {
		for _, job := range []string{"old", "recent"} {
			for r := int64(1); r <= 3; r++ {
				f.lc().QueueSucceed(b, job, r)
			}
		}
	})
	m := f.maintainer(maintain.Config{RecoverAfter: time.Hour, Lease: time.Minute, Retention: 30 * 24 * time.Hour})
	if !m.Elector.Attempt(ctx) {
		t.Fatal("not elected")
	}
	m.Tick(ctx) // completes "old" and "recent"
	if _, err := f.stack.Pool.Exec(ctx, `UPDATE bulk_import_job SET finished_at = now() - interval '31 days' WHERE job_id = 'old'`); err != nil {
		t.Fatal(err)
	}
	m2 := f.maintainer(maintain.Config{RecoverAfter: time.Hour, Lease: time.Minute, Retention: 30 * 24 * time.Hour})
	m.Elector.Resign(ctx)
	if !m2.Elector.Attempt(ctx) {
		t.Fatal("not elected")
	}
	m2.Tick(ctx)
	for job, want := range map[string]int{"old": 0, "recent": 3, "running": 3} {
		if n := pgtest.Count(t, f.stack.Pool, `SELECT count(*) FROM bulk_import_row WHERE job_id = $1`, job); n != want {
			t.Errorf("job %s has %d rows, want %d", job, n, want)
		}
	}
	st, err := f.store.Status(ctx, "old")
	if err != nil || st.PrunedAt == nil || st.Succeeded != 3 || st.Total != 3 || !st.Done {
		t.Fatalf("old job after retention: %+v, %v", st, err)
	}
	if n := m2.Metrics.RowsPruned.Load(); n != 3 {
		t.Fatalf("%d rows pruned", n)
	}
	// With retention 0 nothing is deleted, however old.
	if _, err := f.stack.Pool.Exec(ctx, `UPDATE bulk_import_job SET finished_at = now() - interval '3000 days' WHERE job_id = 'recent'`); err != nil {
		t.Fatal(err)
	}
	m3 := f.maintainer(maintain.Config{RecoverAfter: time.Hour, Lease: time.Minute, Retention: 0})
	m2.Elector.Resign(ctx)
	if !m3.Elector.Attempt(ctx) {
		t.Fatal("not elected")
	}
	m3.Tick(ctx)
	if n := pgtest.Count(t, f.stack.Pool, `SELECT count(*) FROM bulk_import_row WHERE job_id = 'recent'`); n != 3 {
		t.Fatalf("retention 0 deleted rows: %d left", n)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	c := maintain.Config{RecoverAfter: time.Minute}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	err := maintain.Config{Interval: -1, Lease: time.Millisecond, Retention: -1}.Validate()
	for _, want := range []string{"interval", "lease", "recover-after", "retention"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}
