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
	"github.com/massgov/bulk-user-import/shared/clock"
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

// expireLease makes the database see the named lease's holder dead (its
// last heartbeat older than the lease), as it would once the holder had
// stopped beating for a lease.
func expireLease(t *testing.T, f fixture, name string) {
	t.Helper()
	if _, err := f.stack.Pool.Exec(context.Background(), `UPDATE bulk_import_worker w SET heartbeat_at = now() - interval '1 day'
		FROM bulk_import_leader l WHERE l.name = $1 AND w.worker_id = l.leader_id`, name); err != nil {
		t.Fatal(err)
	}
}

// ended waits (10 s at most) for a leadership context to end.
func ended(t *testing.T, lead context.Context, why string) {
	t.Helper()
	select {
	case <-lead.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s, but the leader's context did not end", why)
	}
}

func TestOneLeaderAtATimeAndAResignedOrDeadLeaderIsReplaced(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	const lease = 30 * time.Second
	var electors []*maintain.Elector
	var clocks []*clock.Fake
	for range 4 {
		e := maintain.NewElector(f.stack.Pool, "test-lease", fleet.NewID(), lease, logging.Discard())
		c := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		e.Clock = c
		electors, clocks = append(electors, e), append(clocks, c)
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
	first := -1
	for round := range 5 {
		var wg sync.WaitGroup
		for _, e := range electors {
			wg.Go(func() { e.Attempt(ctx) })
		}
		wg.Wait()
		l := leaders()
		if len(l) != 1 || (first >= 0 && l[0] != first) {
			t.Fatalf("round %d: leaders %v (first %d)", round, l, first)
		}
		first = l[0]
	}
	id, live, ok, err := maintain.Leader(ctx, f.stack.Pool, "test-lease")
	if err != nil || !ok || !live || id != electors[first].ID() {
		t.Fatalf("lease row: %s %v %v %v; want %s", id, live, ok, err, electors[first].ID())
	}
	lead, stop, ok := electors[first].Lead(ctx)
	if !ok {
		t.Fatal("the leader has no leadership context")
	}
	defer stop()

	// The leader resigns: its work's context ends, and another takes over
	// at its next attempt.
	electors[first].Resign(ctx)
	ended(t, lead, "resigning")
	second := -1
	for i, e := range electors {
		if i != first && e.Attempt(ctx) {
			second = i
			break
		}
	}
	if second < 0 || slices.Contains(leaders(), first) {
		t.Fatalf("after resigning: leaders %v", leaders())
	}
	lead2, stop2, ok := electors[second].Lead(ctx)
	if !ok {
		t.Fatal("the new leader has no leadership context")
	}
	defer stop2()

	// The new leader dies (stops renewing): nobody else wins before its
	// lease ends, somebody does after; by its own clock its lease runs
	// out, and its work's context ends with it.
	for i, e := range electors {
		if i != second && e.Attempt(ctx) {
			t.Fatalf("elector %d won a live lease", i)
		}
	}
	expireLease(t, f, "test-lease")
	clocks[second].Advance(lease)
	if electors[second].IsLeader() {
		t.Fatal("a leader that did not renew still thinks it leads")
	}
	ended(t, lead2, "the lease ran out")
	terms := make([]int, len(electors))
	for i, e := range electors {
		terms[i] = e.Term()
	}
	third := -1
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
	if electors[third].Term() != terms[third]+1 {
		t.Fatalf("term %d after %d: winning again is a new term", electors[third].Term(), terms[third])
	}
	// A leader whose lease another took (it expired under a stalled
	// process) learns so at its next attempt: its work's context ends.
	lead3, stop3, _ := electors[third].Lead(ctx)
	defer stop3()
	expireLease(t, f, "test-lease")
	if !electors[(third+1)%len(electors)].Attempt(ctx) {
		t.Fatal("an expired lease was not taken")
	}
	if electors[third].Attempt(ctx) {
		t.Fatal("a leader whose lease was taken still leads")
	}
	ended(t, lead3, "the lease was taken")
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

// idle makes the job's rows look idle for d to the database: sent and
// last changed d ago.
func idle(t *testing.T, f fixture, job string, d time.Duration) {
	t.Helper()
	if _, err := f.stack.Pool.Exec(context.Background(), `UPDATE bulk_import_row SET sent_at = now() - $2 * interval '1 second',
		updated_at = now() - $2 * interval '1 second' WHERE job_id = $1`, job, d.Seconds()); err != nil {
		t.Fatal(err)
	}
}

// fakeTime gives the maintainer and its elector one fake clock.
func fakeTime(m *maintain.Maintainer) *clock.Fake {
	c := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	m.Clock, m.Elector.Clock = c, c
	return c
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
	const bound = time.Minute
	m := f.maintainer(maintain.Config{RecoverAfter: bound, Lease: time.Hour, MaxReceiveCount: 3, DLQRetention: 14 * 24 * time.Hour})
	clk := fakeTime(m)
	if !m.Elector.Attempt(ctx) {
		t.Fatal("not elected")
	}
	// The rows have been idle for longer than the bound, but the queue
	// has been seen empty only from now: within the bound nothing is
	// re-sent.
	idle(t, f, "lost", 2*bound)
	m.Tick(ctx)
	clk.Advance(bound / 2)
	m.Tick(ctx)
	if got := f.drain(t); len(got) != 0 || m.Metrics.RowsResent.Load() != 0 {
		t.Fatalf("re-sent within the bound: %v", got)
	}
	clk.Advance(bound / 2)
	m.Tick(ctx)
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
	clk.Advance(5 * time.Second)
	m.Tick(ctx)
	if got := f.drain(t); len(got) != 0 {
		t.Fatalf("re-sent twice: %v", got)
	}
	// The row in the DLQ is re-sent once the DLQ's retention has passed.
	if _, err := f.stack.Pool.Exec(ctx, `UPDATE bulk_import_row SET sent_at = now() - interval '15 days', updated_at = now() - interval '15 days'
		WHERE job_id = 'lost' AND row_no = 2`); err != nil {
		t.Fatal(err)
	}
	clk.Advance(5 * time.Second)
	m.Tick(ctx)
	if got := f.drain(t); !slices.Equal(got, []int64{2}) {
		t.Fatalf("after the DLQ's retention: %v", got)
	}
}

func TestTheRescuerWaitsWhileTheQueueHasABacklog(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.split(t, "backlog", 5)
	idle(t, f, "backlog", time.Hour)
	m := f.maintainer(maintain.Config{RecoverAfter: time.Minute, Lease: time.Hour})
	clk := fakeTime(m)
	if !m.Elector.Attempt(ctx) {
		t.Fatal("not elected")
	}
	for range 8 {
		m.Tick(ctx)
		clk.Advance(30 * time.Second)
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

// The services run on the leadership's context: once another process
// takes the lease (it ran out under this one), this maintainer stops
// leading at its next attempt, and starts again when elected again.
func TestTheMaintainerStopsWhenItsLeaseIsLost(t *testing.T) {
	t.Parallel()
	f := setup(t)
	const lease = 30 * time.Second
	m := f.maintainer(maintain.Config{RecoverAfter: time.Hour, Lease: lease, Interval: time.Hour})
	clk := fakeTime(m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	leading := func(want int64) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); m.Metrics.Leader.Load() != want; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("leader metric %d, want %d", m.Metrics.Leader.Load(), want)
			}
		}
	}
	leading(1)
	// The lease runs out in the database and another process takes it.
	expireLease(t, f, maintain.LeaseName)
	other := maintain.NewElector(f.stack.Pool, maintain.LeaseName, fleet.NewID(), lease, logging.Discard())
	if !other.Attempt(context.Background()) {
		t.Fatal("the other process did not take the expired lease")
	}
	bctx, bcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer bcancel()
	if err := clk.BlockUntil(bctx, 2); err != nil { // the elector's next attempt and the next tick
		t.Fatal(err)
	}
	clk.Advance(lease / 3)
	leading(0)
	// The other resigns: at its next attempt this one leads again.
	other.Resign(context.Background())
	if err := clk.BlockUntil(bctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(lease / 3)
	leading(1)
}

// The lease lives with the worker's heartbeat in the fleet's registry:
// others take it only once the holder's worker has been silent for a
// lease, whichever of its loops beat last; the holder itself counts its
// lease from its last confirming attempt.
func TestALeaseLivesWithItsWorkersHeartbeat(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	const lease = 30 * time.Second
	holder := maintain.NewElector(f.stack.Pool, "hearty", fleet.NewID(), lease, logging.Discard())
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	holder.Clock = clk
	if !holder.Attempt(ctx) {
		t.Fatal("not elected")
	}
	lead, stop, _ := holder.Lead(ctx)
	defer stop()
	other := maintain.NewElector(f.stack.Pool, "hearty", fleet.NewID(), lease, logging.Discard())
	// The holder's attempts stop, but its worker beats (its registration,
	// a budget sync): nobody takes the lease, and status calls it live.
	if _, err := f.stack.Pool.Exec(ctx, `UPDATE bulk_import_worker SET heartbeat_at = now() WHERE worker_id = $1`, holder.ID()); err != nil {
		t.Fatal(err)
	}
	if other.Attempt(ctx) {
		t.Fatal("a live worker's lease was taken")
	}
	if _, live, _, err := maintain.Leader(ctx, f.stack.Pool, "hearty"); err != nil || !live {
		t.Fatalf("lease live %v, %v", live, err)
	}
	// By its own clock, the holder leads a lease after its last attempt.
	clk.Advance(lease - time.Second)
	if !holder.IsLeader() || lead.Err() != nil {
		t.Fatal("stopped leading before its lease ran out")
	}
	clk.Advance(time.Second)
	if holder.IsLeader() {
		t.Fatal("still leading a lease after its last confirmation")
	}
	ended(t, lead, "the lease ran out")
	// Once its worker is silent for a lease, the lease is dead and taken.
	expireLease(t, f, "hearty")
	if _, live, _, err := maintain.Leader(ctx, f.stack.Pool, "hearty"); err != nil || live {
		t.Fatalf("lease live %v, %v: the worker's heartbeat is a day old", live, err)
	}
	if !other.Attempt(ctx) {
		t.Fatal("a dead worker's lease was not taken")
	}
}

// Processes that start at the same moment (every deploy: the lease was
// resigned, and none of them has beaten yet) elect one leader: the taking
// of the lease decides on the holder's beat committed with it.
func TestProcessesStartingTogetherElectOneLeader(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	for round := range 40 {
		var electors []*maintain.Elector
		for range 6 {
			electors = append(electors, maintain.NewElector(f.stack.Pool, "together", fleet.NewID(), 30*time.Second, logging.Discard()))
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		won := make([]bool, len(electors))
		for i, e := range electors {
			wg.Go(func() { <-start; won[i] = e.Attempt(ctx) })
		}
		close(start)
		wg.Wait()
		var leaders []int
		for i, w := range won {
			if w {
				leaders = append(leaders, i)
			}
		}
		if len(leaders) != 1 {
			t.Fatalf("round %d: %d leaders %v", round, len(leaders), leaders)
		}
		electors[leaders[0]].Resign(ctx)
	}
}
