package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"

	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/csvrows"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/results"
)

// countingS3 counts the result files put and fails the first failFirst.
type countingS3 struct {
	api       results.S3API
	puts      atomic.Int64
	failFirst atomic.Int64
}

func (c *countingS3) PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	if c.failFirst.Add(-1) >= 0 {
		return nil, errors.New("injected: S3 unavailable")
	}
	c.puts.Add(1)
	return c.api.PutObject(ctx, in, opts...)
}

type fixture struct {
	stack *stacktest.Stack
	store *jobs.Store
	s3    *countingS3
	lc    *lifecycle.Lifecycle
}

func setup(t *testing.T) fixture {
	t.Helper()
	s := stacktest.New(t, stacktest.Options{})
	f := fixture{stack: s, store: jobs.NewStore(s.Pool), s3: &countingS3{api: awsconf.S3(s.AWS)}}
	f.lc = lifecycle.New(s.Pool, &results.Publisher{Jobs: f.store, S3: f.s3, Bucket: s.Resources.ResultsBucket}, logging.Discard())
	return f
}

// record records a job of n rows, as the splitter does.
func (f fixture) record(t *testing.T, job string, n int, limits jobs.Limits) {
	t.Helper()
	ctx := context.Background()
	if _, _, err := f.lc.Create(ctx, job, false, limits); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("fein,email\n")
	for i := range n {
		fmt.Fprintf(&b, "123456789,u%d@b.co\n", i)
	}
	name := "/in/" + job + ".csv"
	r, err := csvrows.NewReader(name, strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.lc.RecordSource(ctx, job, name, r.Header(), r); err != nil {
		t.Fatal(err)
	}
	if err := f.lc.MarkRecorded(ctx, job); err != nil {
		t.Fatal(err)
	}
}

// succeed marks a row succeeded as a worker does: one batch.
func (f fixture) succeed(t *testing.T, job string, row int64) {
	t.Helper()
	pgtest.Batch(t, f.stack.Pool, func(b *pgx.Batch) { f.lc.QueueSucceed(b, job, row) })
}

func (f fixture) status(t *testing.T, job string) jobs.Status {
	t.Helper()
	st, err := f.store.Status(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestEveryJobIsCompletedOnceWhenItsLastRowsFinishTogether(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	const jobsN, rowsN, completers = 20, 8, 4
	for j := range jobsN {
		f.record(t, fmt.Sprintf("race-%d", j), rowsN, jobs.Limits{})
	}
	// For each job, eight "workers" finish its eight rows at the same
	// instant while four "maintainers" try to complete it.
	for j := range jobsN {
		job := fmt.Sprintf("race-%d", j)
		start := make(chan struct{})
		var wg sync.WaitGroup
		var won atomic.Int64
		for r := range rowsN {
			wg.Go(func() { <-start; f.succeed(t, job, int64(r+1)) })
		}
		for range completers {
			wg.Go(func() {
				<-start
				for range 5 {
					_, w, err := f.lc.Complete(ctx, job)
					if err != nil {
						t.Error(err)
					}
					if w {
						won.Add(1)
					}
				}
			})
		}
		close(start)
		wg.Wait()
		// Whatever the interleaving, one more pass (the next tick) completes it.
		done, err := f.lc.CompleteReady(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		won.Add(int64(len(done)))
		if won.Load() != 1 {
			t.Fatalf("job %s completed %d times, want once", job, won.Load())
		}
		if st := f.status(t, job); !st.Done || st.Completion != 1 || st.Succeeded != rowsN {
			t.Fatalf("job %s: %+v", job, st)
		}
	}
}

func TestACompletionNeverRacesAReplayIntoAFinishedJobWithQueuedRows(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.record(t, "replayed", 1, jobs.Limits{})
	if _, err := f.lc.ClaimFailure(ctx, "replayed", 1, "EMPLOYER_NOT_FOUND", "x"); err != nil {
		t.Fatal(err)
	}
	if _, won, err := f.lc.Complete(ctx, "replayed"); err != nil || !won {
		t.Fatalf("first completion: %v %v", won, err)
	}
	for i := range 40 {
		// A replay requeues the failed row while a maintainer completes.
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			<-start
			if _, err := f.lc.Requeue(ctx, "replayed", []int64{1}); err != nil {
				t.Error(err)
			}
		})
		wg.Go(func() {
			<-start
			if _, _, err := f.lc.Complete(ctx, "replayed"); err != nil {
				t.Error(err)
			}
		})
		close(start)
		wg.Wait()
		if st := f.status(t, "replayed"); st.FinishedAt != nil && st.Queued > 0 {
			t.Fatalf("round %d: the job is finished with %d queued rows", i, st.Queued)
		}
		// The row fails again and the job completes again.
		if _, err := f.lc.ClaimFailure(ctx, "replayed", 1, "EMPLOYER_NOT_FOUND", "x"); err != nil {
			t.Fatal(err)
		}
		if _, err := f.lc.CompleteReady(ctx, 10); err != nil {
			t.Fatal(err)
		}
		if st := f.status(t, "replayed"); !st.Done {
			t.Fatalf("round %d: not done after the row failed again: %+v", i, st)
		}
	}
}

func TestResultFilesAreWrittenOncePerCompletionAndAgainAfterAReplay(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.record(t, "files", 3, jobs.Limits{})
	for r := int64(1); r <= 3; r++ {
		f.succeed(t, "files", r)
	}
	if st := f.status(t, "files"); st.Done || st.Results != "" {
		t.Fatalf("done before its completion was recorded: %+v", st)
	}
	if _, won, err := f.lc.Complete(ctx, "files"); err != nil || !won {
		t.Fatalf("complete: %v %v", won, err)
	}
	if st := f.status(t, "files"); !st.Done || st.Results != jobs.ResultsPending {
		t.Fatalf("after completion: %+v", st)
	}
	// A maintainer and an operator's command write at the same moment.
	var wg sync.WaitGroup
	var written atomic.Int64
	for _, job := range []string{"", "files", "", "files"} {
		wg.Go(func() {
			if _, out, err := f.lc.WriteResults(ctx, job); err != nil {
				t.Error(err)
			} else if out == lifecycle.Written {
				written.Add(1)
			}
		})
	}
	wg.Wait()
	if written.Load() != 1 || f.s3.puts.Load() != 2 {
		t.Fatalf("%d writes, %d files put: want one write of two files", written.Load(), f.s3.puts.Load())
	}
	st := f.status(t, "files")
	if st.Results != jobs.ResultsWritten || st.ResultsWrittenAt == nil || st.ResultsLocation != "s3://"+f.stack.Resources.ResultsBucket+"/files/" {
		t.Fatalf("status %+v", st)
	}
	if _, out, _ := f.lc.WriteResults(ctx, ""); out != lifecycle.Nothing {
		t.Fatalf("written files written again: %v", out)
	}
	// A replay reopens the job; its next completion writes the files again.
	if _, err := f.lc.ClaimFailure(ctx, "files", 1, "X", "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.stack.Pool.Exec(ctx, `UPDATE bulk_import_row SET state = 'failed' WHERE job_id = 'files' AND row_no = 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := f.lc.Requeue(ctx, "files", []int64{1}); err != nil {
		t.Fatal(err)
	}
	if st := f.status(t, "files"); st.Done {
		t.Fatalf("a replayed job is still done: %+v", st)
	}
	f.succeed(t, "files", 1)
	f.lc.Finish(ctx, "files")
	if st := f.status(t, "files"); !st.Done || st.Completion != 2 || st.Results != jobs.ResultsWritten || f.s3.puts.Load() != 4 {
		t.Fatalf("after the replay: %+v, %d files put", st, f.s3.puts.Load())
	}
}

func TestResultFilesAreRetriedAtRetryBaseDoublingToRetryMax(t *testing.T) {
	t.Parallel()
	const s = time.Second
	tests := []struct {
		name      string
		base, max time.Duration
		want      []time.Duration // after 0, 1, 2, ... failures
	}{
		{"the defaults", lifecycle.DefaultRetryBase, lifecycle.DefaultRetryMax,
			[]time.Duration{5 * s, 10 * s, 20 * s, 40 * s, 80 * s, 160 * s, 320 * s, 10 * time.Minute, 10 * time.Minute}},
		{"sub-second", 300 * time.Millisecond, s, []time.Duration{300 * time.Millisecond, 600 * time.Millisecond, s, s}},
		{"a base above the max waits the max", time.Hour, 10 * time.Minute, []time.Duration{10 * time.Minute, 10 * time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := lifecycle.New(nil, nil, logging.Discard())
			l.RetryBase, l.RetryMax = tt.base, tt.max
			for failures, want := range tt.want {
				if got := l.RetryDelay(failures); got != want {
					t.Errorf("after %d failures: %s, want %s", failures, got, want)
				}
			}
			if got := l.RetryDelay(1000); got != tt.max {
				t.Errorf("after 1000 failures: %s, want %s", got, tt.max)
			}
		})
	}
}

// retryIn reads how long until the job's failed write is retried
// (database time).
func (f fixture) retryIn(t *testing.T, job string) time.Duration {
	t.Helper()
	var secs float64
	if err := f.stack.Pool.QueryRow(context.Background(), `SELECT extract(epoch FROM results_retry_at - now())::float8 FROM bulk_import_job WHERE job_id = $1`, job).Scan(&secs); err != nil {
		t.Fatal(err)
	}
	return time.Duration(secs * float64(time.Second))
}

// due makes the job's retry due now, as time passing would.
func (f fixture) due(t *testing.T, job string) {
	t.Helper()
	if _, err := f.stack.Pool.Exec(context.Background(), `UPDATE bulk_import_job SET results_retry_at = now() - interval '1 millisecond' WHERE job_id = $1`, job); err != nil {
		t.Fatal(err)
	}
}

func TestAFailedWriteIsRetriedAfterABackoffThatDoubles(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.lc.RetryBase, f.lc.RetryMax = time.Minute, 3*time.Minute
	f.record(t, "flaky", 1, jobs.Limits{})
	f.succeed(t, "flaky", 1)
	f.s3.failFirst.Store(3)
	if _, won, _ := f.lc.Complete(ctx, "flaky"); !won {
		t.Fatal("not completed")
	}
	within := func(d, want time.Duration) bool { return d > want-10*time.Second && d <= want }
	if _, out, err := f.lc.WriteResults(ctx, ""); out != lifecycle.Failed || err != nil {
		t.Fatalf("first write: %v %v", out, err)
	}
	st := f.status(t, "flaky")
	if st.Results != jobs.ResultsRetrying || !strings.Contains(st.ResultsError, "S3 unavailable") {
		t.Fatalf("after a failure: %+v", st)
	}
	if d := f.retryIn(t, "flaky"); !within(d, time.Minute) {
		t.Fatalf("first retry in %s, want the base, 1m", d)
	}
	if _, out, _ := f.lc.WriteResults(ctx, ""); out != lifecycle.Nothing {
		t.Fatalf("retried before its backoff: %v", out)
	}
	f.due(t, "flaky")
	if _, out, _ := f.lc.WriteResults(ctx, ""); out != lifecycle.Failed {
		t.Fatalf("second write: %v", out)
	}
	if d := f.retryIn(t, "flaky"); !within(d, 2*time.Minute) {
		t.Fatalf("second retry in %s, want twice the base, 2m", d)
	}
	f.due(t, "flaky")
	if _, out, _ := f.lc.WriteResults(ctx, ""); out != lifecycle.Failed {
		t.Fatalf("third write: %v", out)
	}
	if d := f.retryIn(t, "flaky"); !within(d, 3*time.Minute) {
		t.Fatalf("third retry in %s, want the most, 3m", d)
	}
	if _, out, _ := f.lc.WriteResults(ctx, ""); out != lifecycle.Nothing {
		t.Fatalf("retried before its backoff: %v", out)
	}
	// An operator's command for the job does not wait for the backoff.
	if _, out, _ := f.lc.WriteResults(ctx, "flaky"); out != lifecycle.Written {
		t.Fatalf("explicit write: %v", out)
	}
	if st := f.status(t, "flaky"); st.Results != jobs.ResultsWritten || st.ResultsError != "" {
		t.Fatalf("after the retry: %+v", st)
	}
}

func TestAClaimIsTakenOverOnlyWhenItsWriterMustHaveDied(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.record(t, "crashed", 1, jobs.Limits{})
	f.succeed(t, "crashed", 1)
	if _, won, _ := f.lc.Complete(ctx, "crashed"); !won {
		t.Fatal("not completed")
	}
	// A writer claims the files and dies before writing.
	if _, err := f.stack.Pool.Exec(ctx, `UPDATE bulk_import_job SET results_claimed_at = now() WHERE job_id = 'crashed'`); err != nil {
		t.Fatal(err)
	}
	if _, out, _ := f.lc.WriteResults(ctx, ""); out != lifecycle.Nothing {
		t.Fatalf("a live claim was taken over: %v", out)
	}
	if _, err := f.stack.Pool.Exec(ctx, `UPDATE bulk_import_job SET results_claimed_at = now() - interval '10 minutes' WHERE job_id = 'crashed'`); err != nil {
		t.Fatal(err)
	}
	if job, out, err := f.lc.WriteResults(ctx, ""); out != lifecycle.Written || job != "crashed" || err != nil {
		t.Fatalf("stale claim: %s %v %v", job, out, err)
	}
}

func TestWithoutABucketTheFilesAreNotWrittenAndStatusSaysWhy(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	lc := lifecycle.New(f.stack.Pool, &results.Publisher{Jobs: f.store}, logging.Discard())
	f.record(t, "nobucket", 1, jobs.Limits{})
	f.succeed(t, "nobucket", 1)
	lc.Finish(ctx, "nobucket")
	st := f.status(t, "nobucket")
	if !st.Done || st.Results != jobs.ResultsNotWritten || !strings.Contains(st.ResultsError, "RESULTS_BUCKET") {
		t.Fatalf("status %+v", st)
	}
	if _, out, _ := lc.WriteResults(ctx, ""); out != lifecycle.Nothing {
		t.Fatalf("tried again: %v", out)
	}
}

func TestJobsThatFailTooMuchAreCancelled(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.record(t, "count", 10, jobs.Limits{MaxFailures: 2})
	f.record(t, "ratio", 10, jobs.Limits{MaxFailureRatio: 0.5, MinSample: 4})
	f.record(t, "fine", 10, jobs.Limits{MaxFailures: 5})
	fail := func(job string, rows ...int64) {
		for _, r := range rows {
			if _, err := f.lc.ClaimFailure(ctx, job, r, "EMPLOYER_NOT_FOUND", "x"); err != nil {
				t.Fatal(err)
			}
		}
	}
	fail("count", 1, 2)
	fail("ratio", 1, 2, 3) // 3 of 3 finished: below the sample
	fail("fine", 1, 2, 3)
	if c, err := f.lc.EnforceLimits(ctx); err != nil || len(c) != 0 {
		t.Fatalf("cancelled %v, %v", c, err)
	}
	fail("count", 3)
	f.succeed(t, "ratio", 4) // 3 of 4 finished: 75 %
	c, err := f.lc.EnforceLimits(ctx)
	if err != nil || len(c) != 2 {
		t.Fatalf("cancelled %+v, %v", c, err)
	}
	for job, want := range map[string]string{"count": "3 rows failed, more than the 2 allowed", "ratio": "3 of 4 finished rows failed (75%)"} {
		st := f.status(t, job)
		if st.CancelledAt == nil || !strings.Contains(st.CancelReason, want) || st.Queued != 0 {
			t.Errorf("job %s: %+v", job, st)
		}
	}
	if st := f.status(t, "fine"); st.CancelledAt != nil {
		t.Fatalf("a job within its limits was cancelled: %+v", st)
	}
	// Cancelled jobs are complete: every row is final.
	done, err := f.lc.CompleteReady(ctx, 10)
	if err != nil || len(done) != 2 {
		t.Fatalf("completed %v, %v", done, err)
	}
}

func TestExceeded(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		limits           jobs.Limits
		failed, finished int64
		want             string
	}{
		{jobs.Limits{}, 100, 100, ""},
		{jobs.Limits{MaxFailures: 5}, 5, 10, ""},
		{jobs.Limits{MaxFailures: 5}, 6, 10, "6 rows failed, more than the 5 allowed (--max-failures)"},
		{jobs.Limits{MaxFailureRatio: 0.2, MinSample: 20}, 19, 19, ""},
		{jobs.Limits{MaxFailureRatio: 0.2, MinSample: 20}, 4, 20, ""},
		{jobs.Limits{MaxFailureRatio: 0.2, MinSample: 20}, 5, 20, "5 of 20 finished rows failed (25%), more than the 20% allowed (--max-failure-ratio)"},
		{jobs.Limits{MaxFailureRatio: 0.2}, 0, 0, ""},
	} {
		if got := lifecycle.Exceeded(tt.limits, tt.failed, tt.finished); got != tt.want {
			t.Errorf("Exceeded(%+v, %d, %d) = %q, want %q", tt.limits, tt.failed, tt.finished, got, tt.want)
		}
	}
}

func TestRowsFinishingAfterACancelReopenTheJobSoItsFilesTellTheTruth(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	for round := range 15 {
		job := fmt.Sprintf("cancel-%d", round)
		f.record(t, job, 10, jobs.Limits{})
		// The operator cancels (and completes, and writes the files) while
		// three rows that workers were registering finish.
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			<-start
			if _, err := f.lc.Cancel(ctx, job, "wrong file"); err != nil {
				t.Error(err)
			}
			f.lc.Finish(ctx, job)
		})
		for r := int64(1); r <= 3; r++ {
			wg.Go(func() { <-start; f.succeed(t, job, r) })
		}
		close(start)
		wg.Wait()
		// The maintainer's next tick.
		if _, err := f.lc.CompleteReady(ctx, 100); err != nil {
			t.Fatal(err)
		}
		for {
			if _, out, err := f.lc.WriteResults(ctx, ""); err != nil {
				t.Fatal(err)
			} else if out == lifecycle.Nothing {
				break
			}
		}
		st := f.status(t, job)
		if !st.Done || st.Succeeded != 3 || st.Cancelled != 7 || st.Results != jobs.ResultsWritten {
			t.Fatalf("round %d: %+v", round, st)
		}
		body := f.s3Object(t, results.Key(job, results.FileSucceeded))
		if n := strings.Count(body, "\n") - 1; n != 3 {
			t.Fatalf("round %d: SUCCEEDED.csv lists %d rows, the job has 3 succeeded:\n%s", round, n, body)
		}
	}
}
