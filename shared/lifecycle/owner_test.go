package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/clock"
	"github.com/massgov/bulk-user-import/shared/csvrows"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/results"
)

// gatedRows yields its first row at once and the others once the gate is
// open: a source that is slow to read.
type gatedRows struct {
	rows    []csvrows.Row
	gate    chan struct{}
	reached chan struct{} // closed when the first row has been taken
	n       int
	once    sync.Once
}

// open lets the other rows come.
func (g *gatedRows) open() { g.once.Do(func() { close(g.gate) }) }

func (g *gatedRows) Next() (csvrows.Row, error) {
	if g.n == 1 {
		close(g.reached)
		<-g.gate
	}
	if g.n == len(g.rows) {
		return csvrows.Row{}, io.EOF
	}
	g.n++
	return g.rows[g.n-1], nil
}

// slowSource returns a source of n rows whose first row comes at once
// and the rest once release is called (at the latest when the test ends).
func slowSource(t *testing.T, prefix string, n int) (src *gatedRows, release func()) {
	t.Helper()
	src = &gatedRows{gate: make(chan struct{}), reached: make(chan struct{})}
	for i := range n {
		email := fmt.Sprintf("%s%d@b.co", prefix, i)
		src.rows = append(src.rows, csvrows.Row{Line: i + 2, Fields: []string{"123456789", email}, Email: email, FEIN: "123456789"})
	}
	return src, src.open
}

// run starts a splitter run of job: it takes the job's run lock, as the
// splitter does for its whole run, and records src; the returned channel
// says how recording ended; unlock ends the run.
func (f fixture) run(t *testing.T, job string, src *gatedRows) (recorded chan error, unlock func()) {
	t.Helper()
	unlock, err := f.store.Lock(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	recorded = make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		_, err := f.lc.RecordSource(context.Background(), job, "/in/"+job+"-b.csv", []string{"fein", "email"}, src)
		recorded <- err
	}()
	// A failed test must not leave the copy hanging.
	t.Cleanup(func() { src.open(); <-finished; unlock() })
	return recorded, unlock
}

// recv waits (30 s at most) for a value.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: nothing within 30 s", what)
		panic("unreachable")
	}
}

func TestAJobIsNotCompletedWhileASourceIsBeingRecordedIntoIt(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.record(t, "two", 3, jobs.Limits{})
	// A second source is being read into the job (splitter --job two
	// b.csv) while the first source's rows finish and a maintainer ticks.
	src, release := slowSource(t, "b", 4)
	recorded, unlock := f.run(t, "two", src)
	recv(t, src.reached, "the copy started")
	for r := int64(1); r <= 3; r++ {
		f.succeed(t, "two", r)
	}
	if _, won, err := f.lc.Complete(ctx, "two"); err != nil || won {
		t.Fatalf("the job was completed while a source was being recorded into it (%v)", err)
	}
	release()
	if err := recv(t, recorded, "recording"); err != nil {
		t.Fatal(err)
	}
	// Recorded, its rows queued: still not complete, nor before the run
	// marks every source recorded and ends.
	if _, won, _ := f.lc.Complete(ctx, "two"); won {
		t.Fatal("completed with the second source's rows queued")
	}
	if err := f.lc.MarkRecorded(ctx, "two"); err != nil {
		t.Fatal(err)
	}
	for r := int64(4); r <= 7; r++ {
		f.succeed(t, "two", r)
	}
	if _, won, _ := f.lc.Complete(ctx, "two"); won {
		t.Fatal("completed while the run still held the job")
	}
	unlock()
	if n, won, err := f.lc.Complete(ctx, "two"); err != nil || !won || n != 1 {
		t.Fatalf("completion %d %v %v: want the first, once every row of both sources is final and the run over", n, won, err)
	}
	if st := f.status(t, "two"); st.Total != 7 || st.Succeeded != 7 || !st.Done {
		t.Fatalf("status %+v", st)
	}
}

func TestAJobCancelledWhileASourceIsBeingRecordedStillCompletes(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	if _, _, err := f.lc.Create(ctx, "wrong", false, jobs.Limits{}); err != nil {
		t.Fatal(err)
	}
	// The operator cancels a new job while its first file is read.
	src, release := slowSource(t, "w", 3)
	recorded, unlock := f.run(t, "wrong", src)
	recv(t, src.reached, "the copy started")
	if _, err := f.lc.Cancel(ctx, "wrong", "wrong file"); err != nil {
		t.Fatal(err)
	}
	release()
	if err := recv(t, recorded, "recording"); !errors.Is(err, jobs.ErrCancelled) {
		t.Fatalf("recording into a cancelled job: %v", err)
	}
	unlock() // the run ends without marking the job recorded
	if _, won, err := f.lc.Complete(ctx, "wrong"); err != nil || !won {
		t.Fatalf("a cancelled job whose run ended is not completed: %v %v", won, err)
	}
	if st := f.status(t, "wrong"); !st.Done || st.Total != 0 || st.CancelledAt == nil {
		t.Fatalf("status %+v", st)
	}
}

func TestAnInterruptedReRunLeavesAFinishedJobAsItWas(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.record(t, "done", 2, jobs.Limits{})
	f.succeed(t, "done", 1)
	if _, err := f.lc.ClaimFailure(ctx, "done", 2, "EMPLOYER_NOT_FOUND", "x"); err != nil {
		t.Fatal(err)
	}
	if _, won, _ := f.lc.Complete(ctx, "done"); !won {
		t.Fatal("not completed")
	}
	// A re-run with another file is stopped while it reads it.
	unlock, err := f.store.Lock(ctx, "done")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.lc.RecordSource(ctx, "done", "/in/bad.csv", []string{"fein", "email"}, &failingRows{}); err == nil {
		t.Fatal("a failing source was recorded")
	}
	unlock()
	if st := f.status(t, "done"); !st.Recorded || !st.Done || st.Completion != 1 {
		t.Fatalf("after the interrupted run: %+v", st)
	}
	// A replay of the failed row reopens the job, which completes again.
	if _, err := f.lc.Requeue(ctx, "done", []int64{2}); err != nil {
		t.Fatal(err)
	}
	f.succeed(t, "done", 2)
	if done, err := f.lc.CompleteReady(ctx, 10); err != nil || len(done) != 1 || done[0].Completion != 2 {
		t.Fatalf("completed %v, %v", done, err)
	}
}

func TestADuplicateSuccessAfterTheCompletionReopensNothing(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.record(t, "dup", 2, jobs.Limits{})
	f.succeed(t, "dup", 1)
	f.succeed(t, "dup", 2)
	f.lc.Finish(ctx, "dup")
	if st := f.status(t, "dup"); !st.Done || st.Completion != 1 || st.Results != jobs.ResultsWritten {
		t.Fatalf("after the completion: %+v", st)
	}
	puts := f.s3.puts.Load()
	// A second delivery of row 2, registered at the same time as the
	// first, records its success after the completion: nothing changes.
	f.succeed(t, "dup", 2)
	if st := f.status(t, "dup"); !st.Done || st.FinishedAt == nil {
		t.Fatalf("a duplicate success reopened the job: %+v", st)
	}
	if done, err := f.lc.CompleteReady(ctx, 10); err != nil || len(done) != 0 {
		t.Fatalf("completed again: %v %v", done, err)
	}
	if _, out, _ := f.lc.WriteResults(ctx, ""); out != lifecycle.Nothing || f.s3.puts.Load() != puts {
		t.Fatalf("files written again: %v", out)
	}
	if st := f.status(t, "dup"); st.Completion != 1 {
		t.Fatalf("completion %d, want 1", st.Completion)
	}
}

// gatedS3 holds the first PutObject until release is closed, then goes on
// with the context the writer gave it.
type gatedS3 struct {
	api      results.S3API
	release  chan struct{}
	held     chan context.Context // receives the held call's context
	once     sync.Once
	released sync.Once
}

// open releases the held call.
func (g *gatedS3) open() { g.released.Do(func() { close(g.release) }) }

func (g *gatedS3) PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	first := false
	g.once.Do(func() { first = true })
	if first {
		g.held <- ctx
		<-g.release
	}
	return g.api.PutObject(ctx, in, opts...)
}

// completed records a job of one row, which succeeds, and its completion.
func (f fixture) completed(t *testing.T, job string) {
	t.Helper()
	f.record(t, job, 1, jobs.Limits{})
	f.succeed(t, job, 1)
	if _, won, err := f.lc.Complete(context.Background(), job); err != nil || !won {
		t.Fatalf("job %s not completed: %v", job, err)
	}
}

// writer is a second writer of the fixture's files, with a fake clock and
// its S3 calls gated.
func (f fixture) writer(t *testing.T, lease time.Duration) (*lifecycle.Lifecycle, *clock.Fake, *gatedS3) {
	g := &gatedS3{api: awsconf.S3(f.stack.AWS), release: make(chan struct{}), held: make(chan context.Context, 1)}
	t.Cleanup(g.open) // a failed test must not leave the write hanging
	lc := lifecycle.New(f.stack.Pool, &results.Publisher{Jobs: f.store, S3: g, Bucket: f.stack.Resources.ResultsBucket}, logging.Discard())
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	lc.Clock, lc.ClaimLease = clk, lease
	return lc, clk, g
}

// writeAsync writes the due result files with w in a goroutine; the
// channel receives the outcome.
func writeAsync(ctx context.Context, w *lifecycle.Lifecycle) <-chan lifecycle.Outcome {
	done := make(chan lifecycle.Outcome, 1)
	go func() {
		_, out, _ := w.WriteResults(ctx, "")
		done <- out
	}()
	return done
}

// claimedAt reads when the job's claim was last renewed (database time).
func claimedAt(t *testing.T, pool *pgxpool.Pool, job string) time.Time {
	t.Helper()
	var at *time.Time
	if err := pool.QueryRow(context.Background(), `SELECT results_claimed_at FROM bulk_import_job WHERE job_id = $1`, job).Scan(&at); err != nil || at == nil {
		t.Fatalf("claimed at %v, %v", at, err)
	}
	return *at
}

func (f fixture) s3Object(t *testing.T, key string) string {
	t.Helper()
	out, err := awsconf.S3(f.stack.AWS).GetObject(context.Background(), &s3.GetObjectInput{Bucket: &f.stack.Resources.ResultsBucket, Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Body.Close()
	b, _ := io.ReadAll(out.Body)
	return string(b)
}

// blockUntil waits (20 s at most) until the writer waits on n timers.
func blockUntil(t *testing.T, clk *clock.Fake, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := clk.BlockUntil(ctx, n); err != nil {
		t.Fatal(err)
	}
}

func waitDone(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: the writer's context did not end", what)
	}
}

func TestAWriterDelayedPastItsClaimNeitherWritesNorRecordsOverTheNewerFiles(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.record(t, "fenced", 2, jobs.Limits{})
	f.succeed(t, "fenced", 1)
	if _, err := f.lc.ClaimFailure(ctx, "fenced", 2, "EMPLOYER_NOT_FOUND", "no employer"); err != nil {
		t.Fatal(err)
	}
	if _, won, err := f.lc.Complete(ctx, "fenced"); err != nil || !won {
		t.Fatalf("complete: %v %v", won, err)
	}
	// A writer claims completion 1's files and stalls in its first write.
	slow, clk, gate := f.writer(t, time.Minute)
	type result struct {
		out lifecycle.Outcome
		err error
	}
	slowDone := make(chan result, 1)
	go func() {
		_, out, err := slow.WriteResults(ctx, "")
		slowDone <- result{out, err}
	}()
	heldCtx := recv(t, gate.held, "the held write")
	// Meanwhile row 2 is corrected (a late success): the job is reopened
	// and completed again.
	f.succeed(t, "fenced", 2)
	if n, won, err := f.lc.Complete(ctx, "fenced"); err != nil || !won || n != 2 {
		t.Fatalf("second completion: %d %v %v", n, won, err)
	}
	// The stalled writer's process stops renewing: its claim runs out in
	// the database, another writer takes it and writes completion 2's files.
	if _, err := f.stack.Pool.Exec(ctx, `UPDATE bulk_import_job SET results_claimed_at = now() - interval '1 hour' WHERE job_id = 'fenced'`); err != nil {
		t.Fatal(err)
	}
	if job, out, err := f.lc.WriteResults(ctx, ""); job != "fenced" || out != lifecycle.Written || err != nil {
		t.Fatalf("the newer writer: %s %v %v", job, out, err)
	}
	// The stalled writer wakes up with its clock past its claim: its
	// writing stops before its held write goes out.
	clk.Advance(2 * time.Minute)
	waitDone(t, heldCtx, "claim run out")
	gate.open()
	if r := recv(t, slowDone, "the stalled writer"); r.out != lifecycle.Released || r.err != nil {
		t.Fatalf("the stalled writer: %v %v", r.out, r.err)
	}
	// The newer files stand, and so does their record.
	if body := f.s3Object(t, results.Key("fenced", results.FileSucceeded)); strings.Count(body, "\n") != 3 {
		t.Fatalf("SUCCEEDED.csv is not completion 2's (2 rows):\n%s", body)
	}
	if body := f.s3Object(t, results.Key("fenced", results.FileFailed)); strings.Count(body, "\n") != 1 {
		t.Fatalf("FAILED.csv is not completion 2's (no row):\n%s", body)
	}
	if st := f.status(t, "fenced"); st.Completion != 2 || st.Results != jobs.ResultsWritten {
		t.Fatalf("status %+v", st)
	}
	var written int
	if err := f.stack.Pool.QueryRow(ctx, `SELECT results_written FROM bulk_import_job WHERE job_id = 'fenced'`).Scan(&written); err != nil || written != 2 {
		t.Fatalf("results_written %d, %v", written, err)
	}
}

func TestASlowWriterKeepsItsClaimByRenewingIt(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.completed(t, "slow")
	const lease = time.Minute
	w, clk, gate := f.writer(t, lease)
	done := writeAsync(ctx, w)
	heldCtx := recv(t, gate.held, "the held write")
	// Five renewals, a third of the lease apart: well past the first
	// lease, the claim holds, renewed in the database each time.
	for i := range 5 {
		blockUntil(t, clk, 2) // the renewal's wait and the expiry
		before := claimedAt(t, f.stack.Pool, "slow")
		clk.Advance(lease / 3)
		for deadline := time.Now().Add(10 * time.Second); !claimedAt(t, f.stack.Pool, "slow").After(before); {
			if time.Now().After(deadline) {
				t.Fatalf("renewal %d did not reach the database", i+1)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if heldCtx.Err() != nil {
			t.Fatalf("renewal %d: the writing stopped although the claim was renewed: %v", i+1, context.Cause(heldCtx))
		}
	}
	// Another writer cannot take a claim renewed a moment ago.
	if _, out, _ := f.lc.WriteResults(ctx, "slow"); out != lifecycle.Nothing {
		t.Fatalf("a renewed claim was taken over: %v", out)
	}
	gate.open()
	if out := recv(t, done, "the writer's outcome"); out != lifecycle.Written {
		t.Fatalf("the slow writer: %v", out)
	}
}

func TestAWriterWhoseClaimIsTakenStopsAtItsNextRenewal(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.completed(t, "cut")
	w, clk, gate := f.writer(t, time.Minute)
	done := writeAsync(ctx, w)
	heldCtx := recv(t, gate.held, "the held write")
	// The claim is taken from under the writer (its renewal will find
	// another token): at its next renewal it stops.
	if _, err := f.stack.Pool.Exec(ctx, `UPDATE bulk_import_job SET results_claim = 'another' WHERE job_id = 'cut'`); err != nil {
		t.Fatal(err)
	}
	blockUntil(t, clk, 2)
	clk.Advance(time.Minute / 3)
	waitDone(t, heldCtx, "claim lost")
	gate.open()
	if out := recv(t, done, "the writer's outcome"); out != lifecycle.Released {
		t.Fatalf("outcome %v, want released", out)
	}
	// Its outcome was not recorded over the other claim's.
	var token string
	if err := f.stack.Pool.QueryRow(ctx, `SELECT coalesce(results_claim, '') FROM bulk_import_job WHERE job_id = 'cut'`).Scan(&token); err != nil || token != "another" {
		t.Fatalf("claim %q, %v", token, err)
	}
}

func TestAFinishedJobIsNotCancelled(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.completed(t, "over")
	if _, err := f.lc.Cancel(ctx, "over", "too late"); !errors.Is(err, lifecycle.ErrFinished) {
		t.Fatalf("cancel of a finished job: %v", err)
	}
	if st := f.status(t, "over"); st.CancelledAt != nil {
		t.Fatalf("a finished job was cancelled: %+v", st)
	}
}

// waitForLockWaiter waits until a session of the test's database waits
// for a lock.
func waitForLockWaiter(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if pgtest.Count(t, pool, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("nobody waits for the lock")
		}
	}
}

func TestAJobThatFinishesWhileItsLimitsAreCheckedIsNotCancelled(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.record(t, "edge", 3, jobs.Limits{MaxFailures: 1})
	for r := int64(1); r <= 3; r++ {
		if _, err := f.lc.ClaimFailure(ctx, "edge", r, "EMPLOYER_NOT_FOUND", "x"); err != nil {
			t.Fatal(err)
		}
	}
	// A maintainer completes the job (its lock held, its commit pending)
	// while another checks the failure limits and finds it over them.
	tx, err := f.stack.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM bulk_import_job WHERE job_id = 'edge' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	type result struct {
		c   []lifecycle.Cancellation
		err error
	}
	enforced := make(chan result, 1)
	go func() {
		c, err := f.lc.EnforceLimits(ctx)
		enforced <- result{c, err}
	}()
	waitForLockWaiter(t, f.stack.Pool)
	if _, err := tx.Exec(ctx, `UPDATE bulk_import_job SET finished_at = now(), completion = completion + 1 WHERE job_id = 'edge'`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if r := recv(t, enforced, "the limits' check"); r.err != nil || len(r.c) != 0 {
		t.Fatalf("cancelled %+v, %v: the job had finished", r.c, r.err)
	}
	if st := f.status(t, "edge"); st.CancelledAt != nil || !st.Done {
		t.Fatalf("status %+v", st)
	}
}

func TestATransitionWaitsForTheRowOutcomesInFlight(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.record(t, "inflight", 2, jobs.Limits{})
	f.succeed(t, "inflight", 1)
	// A worker's success of row 2 holds the job's shared lock, its
	// transaction not yet committed.
	tx, err := f.stack.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	b := &pgx.Batch{}
	f.lc.QueueSucceed(b, "inflight", 2)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		t.Fatal(err)
	}
	completed := make(chan bool, 1)
	go func() {
		_, won, _ := f.lc.Complete(ctx, "inflight")
		completed <- won
	}()
	waitForLockWaiter(t, f.stack.Pool)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if !recv(t, completed, "the completion") {
		t.Fatal("the completion did not see the row's success committed while it waited")
	}
}

// A writer checks its claim by the clock right before each write: one
// frozen past its claim learns so at once, whether or not the expiry has
// cancelled its writing yet.
func TestAClaimIsCheckedByTheClockBeforeEachWrite(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	held := lifecycle.ClaimHeld(clk, clk.Now().Add(time.Minute))
	if err := held(); err != nil {
		t.Fatalf("a live claim: %v", err)
	}
	clk.Advance(time.Minute)
	if err := held(); err == nil {
		t.Fatal("a claim that ran out still holds")
	}
}

// A writer of an earlier version takes a claim over without a token: it
// moves the claim's time, and the writer whose claim it was stops at its
// next renewal and records nothing.
func TestAClaimTakenOverByAnOlderWriterIsLost(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.completed(t, "mixed")
	w, clk, gate := f.writer(t, time.Minute)
	done := writeAsync(ctx, w)
	heldCtx := recv(t, gate.held, "the held write")
	// The older writer's claim: it sets the time only.
	if _, err := f.stack.Pool.Exec(ctx, `UPDATE bulk_import_job SET results_claimed_at = now() + interval '1 second' WHERE job_id = 'mixed'`); err != nil {
		t.Fatal(err)
	}
	blockUntil(t, clk, 2)
	clk.Advance(time.Minute / 3)
	waitDone(t, heldCtx, "claim taken by an older writer")
	gate.open()
	if out := recv(t, done, "the writer's outcome"); out != lifecycle.Released {
		t.Fatalf("outcome %v, want released", out)
	}
	var st jobs.Status
	if st = f.status(t, "mixed"); st.Results == jobs.ResultsWritten {
		t.Fatalf("the stopped writer recorded its files: %+v", st)
	}
}

// Renewals that fail (the database refuses them) keep the writer going
// only until its claim runs out by its own clock; then it stops.
func TestAWriterWhoseRenewalsFailStopsWhenItsClaimRunsOut(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.completed(t, "refused")
	const lease = time.Minute
	w, clk, gate := f.writer(t, lease)
	done := writeAsync(ctx, w)
	heldCtx := recv(t, gate.held, "the held write")
	// From now on the database refuses every renewal.
	if _, err := f.stack.Pool.Exec(ctx, `ALTER TABLE bulk_import_job ADD CONSTRAINT no_renewal
		CHECK (results_claimed_at IS NULL OR results_claimed_at < '2000-01-01') NOT VALID`); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		blockUntil(t, clk, 2)
		clk.Advance(lease / 3)
		// The renewal fails; the writing goes on while the claim holds.
		for deadline := time.Now().Add(10 * time.Second); clk.Pending() < 2 && heldCtx.Err() == nil; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("renewal %d: the writer waits on nothing", i+1)
			}
		}
		if heldCtx.Err() != nil {
			t.Fatalf("renewal %d failed and the writing stopped before the claim ran out: %v", i+1, context.Cause(heldCtx))
		}
	}
	clk.Advance(lease / 3)
	waitDone(t, heldCtx, "the claim ran out unrenewed")
	gate.open()
	if out := recv(t, done, "the writer's outcome"); out != lifecycle.Released {
		t.Fatalf("outcome %v, want released", out)
	}
}

// jumpyClock reads later than its fake clock once jumped, without firing
// the fake's timers: a process that wakes from a freeze reads the time
// before its overdue timers have run.
type jumpyClock struct {
	*clock.Fake
	mu     sync.Mutex
	offset time.Duration
}

func (j *jumpyClock) Now() time.Time {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.Fake.Now().Add(j.offset)
}

func (j *jumpyClock) jump(d time.Duration) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.offset += d
}

// A writer that wakes past its claim, before its expiry has stopped the
// writing, finds so by its clock before its next file: that file is not
// put, and the stop is a release, not a failed write.
func TestAWriterWakingPastItsClaimPutsNoMoreFiles(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.completed(t, "woken")
	w, fake, gate := f.writer(t, time.Minute)
	clk := &jumpyClock{Fake: fake}
	w.Clock = clk
	done := writeAsync(ctx, w)
	recv(t, gate.held, "the first file's put")
	clk.jump(2 * time.Minute)
	gate.open()
	if out := recv(t, done, "the writer's outcome"); out != lifecycle.Released {
		t.Fatalf("outcome %v, want released", out)
	}
	if st := f.status(t, "woken"); st.Results == jobs.ResultsRetrying || st.ResultsError != "" {
		t.Fatalf("the stop was recorded as a failed write: %+v", st)
	}
	if _, err := awsconf.S3(f.stack.AWS).HeadObject(ctx, &s3.HeadObjectInput{Bucket: &f.stack.Resources.ResultsBucket,
		Key: aws.String(results.Key("woken", results.FileFailed))}); err == nil {
		t.Fatal("the second file was put after the claim ran out")
	}
}
