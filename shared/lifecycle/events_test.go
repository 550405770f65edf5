package lifecycle_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/events"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/results"
)

// testPublisher publishes to the stack's real topic (kumo SNS, delivered
// raw to the receiver queue), failing first with the injected errors and,
// when gate is set, holding each publish until it is closed (a stalled
// process: the context is not looked at).
type testPublisher struct {
	real   events.Publisher
	mu     sync.Mutex
	fail   []error
	gate   chan struct{}
	held   chan struct{} // receives when a publish is held
	called atomic.Int64
}

func (p *testPublisher) Destination() string { return p.real.Destination() }

func (p *testPublisher) Publish(ctx context.Context, e events.Event) error {
	p.called.Add(1)
	if p.gate != nil {
		p.held <- struct{}{}
		<-p.gate
	}
	p.mu.Lock()
	var err error
	if len(p.fail) > 0 {
		err, p.fail = p.fail[0], p.fail[1:]
	}
	p.mu.Unlock()
	if err != nil {
		return err
	}
	return p.real.Publish(ctx, e)
}

// announcer returns a lifecycle on the fixture's database publishing to
// its topic through a testPublisher.
func (f fixture) announcer(t *testing.T) (*lifecycle.Lifecycle, *testPublisher) {
	t.Helper()
	p := &testPublisher{real: &events.SNS{API: awsconf.SNS(f.stack.AWS), Topic: f.stack.Resources.CompletionTopicARN}}
	lc := lifecycle.New(f.stack.Pool, &results.Publisher{Jobs: f.store, S3: f.s3, Bucket: f.stack.Resources.ResultsBucket}, logging.Discard())
	lc.Events = p
	return lc, p
}

// received drains the receiver queue until it has stayed empty for a
// while (after want events, or until the deadline) and returns the events
// by event id.
func (f fixture) received(t *testing.T, want int) map[string][]events.Event {
	t.Helper()
	ctx := context.Background()
	c := awsconf.SQS(f.stack.AWS)
	got := map[string][]events.Event{}
	n, empty := 0, 0
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && (n < want || empty < 2) {
		out, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &f.stack.Resources.CompletionQueueURL, MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Messages) == 0 {
			empty++
		}
		for _, m := range out.Messages {
			var e events.Event
			if err := json.Unmarshal([]byte(aws.ToString(m.Body)), &e); err != nil {
				t.Fatalf("event %q: %v", aws.ToString(m.Body), err)
			}
			got[e.EventID] = append(got[e.EventID], e)
			n++
			if _, err := c.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &f.stack.Resources.CompletionQueueURL, ReceiptHandle: m.ReceiptHandle}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return got
}

// publish runs PublishEvent once and checks its outcome.
func publish(t *testing.T, lc *lifecycle.Lifecycle, want lifecycle.EventOutcome) {
	t.Helper()
	if _, out, err := lc.PublishEvent(context.Background()); err != nil || out != want {
		t.Fatalf("publish event: outcome %v, %v; want %v", out, err, want)
	}
}

// writeResults writes the due result files.
func (f fixture) writeResults(t *testing.T) {
	t.Helper()
	for {
		_, out, err := f.lc.WriteResults(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		if out == lifecycle.Nothing {
			return
		}
	}
}

func TestEachCompletionIsPublishedOnceByConcurrentAnnouncers(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	const jobsN, announcers = 6, 8
	for j := range jobsN {
		f.completed(t, fmt.Sprintf("ev-%d", j))
	}
	f.writeResults(t)
	var published atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range announcers {
		lc, _ := f.announcer(t)
		wg.Go(func() {
			<-start
			for {
				_, out, err := lc.PublishEvent(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if out == lifecycle.EventPublished {
					published.Add(1)
				}
				if out == lifecycle.EventNothing {
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	got := f.received(t, jobsN)
	if published.Load() != jobsN || len(got) != jobsN {
		t.Fatalf("%d published, %d event ids received: want %d", published.Load(), len(got), jobsN)
	}
	for j := range jobsN {
		id := fmt.Sprintf("ev-%d/1", j)
		if len(got[id]) != 1 {
			t.Errorf("event %s received %d times", id, len(got[id]))
		}
		e := got[id][0]
		job := fmt.Sprintf("ev-%d", j)
		if e.Version != 1 || e.Type != events.TypeCompleted || e.Job != job || e.State != events.StateCompleted || e.Completion != 1 ||
			e.Counts.Total != 1 || e.Counts.Succeeded != 1 || e.Results.State != jobs.ResultsWritten ||
			len(e.Results.Files) != 2 || e.Results.Files[0] != "s3://"+f.stack.Resources.ResultsBucket+"/"+job+"/SUCCEEDED.csv" ||
			e.FinishedAt == nil || e.StartedAt == nil || e.CreatedAt.IsZero() {
			t.Errorf("event %+v", e)
		}
		if st := f.status(t, job); st.Event != jobs.EventSent || st.EventID != id || st.EventSentAt == nil || st.EventFailures != 0 {
			t.Errorf("status %+v", st)
		}
	}
}

func TestAStalledAnnouncerIsTakenOverAndItsLateRecordIsANoOp(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.completed(t, "stall")
	f.writeResults(t)
	stalled, sp := f.announcer(t)
	stalled.EventLease = time.Second
	sp.gate, sp.held = make(chan struct{}), make(chan struct{}, 1)
	sp.fail = []error{errors.New("injected: the stalled announcer's publish failed late")}
	t.Cleanup(func() {
		select {
		case <-sp.gate:
		default:
			close(sp.gate)
		}
	})
	done := make(chan lifecycle.EventOutcome, 1)
	go func() {
		_, out, err := stalled.PublishEvent(ctx)
		if err != nil {
			t.Error(err)
		}
		done <- out
	}()
	recv(t, sp.held, "the stalled announcer's publish")
	// While its claim holds, nobody else takes the event.
	other, _ := f.announcer(t)
	other.EventLease = time.Hour
	publish(t, other, lifecycle.EventNothing)
	// Once it is older than the lease, another announcer takes it over.
	other.EventLease = time.Second
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, out, err := other.PublishEvent(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if out == lifecycle.EventPublished {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stalled claim was never taken over")
		}
		time.Sleep(100 * time.Millisecond) // polling the database's clock up to the deadline
	}
	close(sp.gate)
	if out := recv(t, done, "the stalled announcer's outcome"); out != lifecycle.EventReleased {
		t.Fatalf("the stalled announcer's late failure: %v, want released (recorded nothing)", out)
	}
	st := f.status(t, "stall")
	if st.Event != jobs.EventSent || st.EventError != "" || st.EventFailures != 0 || st.EventRetryAt != nil {
		t.Fatalf("the late record changed the event's state: %+v", st)
	}
	if got := f.received(t, 1); len(got["stall/1"]) != 1 || len(got) != 1 {
		t.Fatalf("received %v", got)
	}
}

func TestAReplayedJobsNextCompletionGetsItsOwnEvent(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	lc, _ := f.announcer(t)
	f.record(t, "again", 2, jobs.Limits{})
	f.succeed(t, "again", 1)
	if _, err := f.lc.ClaimFailure(ctx, "again", 2, "EMPLOYER_NOT_FOUND", "no employer"); err != nil {
		t.Fatal(err)
	}
	f.lc.Finish(ctx, "again")
	publish(t, lc, lifecycle.EventPublished)
	publish(t, lc, lifecycle.EventNothing)
	first := f.received(t, 1)["again/1"]
	if len(first) != 1 || first[0].Counts.Failed != 1 || first[0].FailuresByCode["EMPLOYER_NOT_FOUND"] != 1 {
		t.Fatalf("first completion's event: %+v", first)
	}
	// A replay reopens the job; it completes twice before any publish:
	// only the latest completion is announced.
	if _, err := f.lc.Requeue(ctx, "again", []int64{2}); err != nil {
		t.Fatal(err)
	}
	if st := f.status(t, "again"); st.Event != "" {
		t.Fatalf("a reopened job shows an event: %+v", st)
	}
	publish(t, lc, lifecycle.EventNothing)
	f.succeed(t, "again", 2)
	f.lc.Finish(ctx, "again")
	if st := f.status(t, "again"); st.Event != jobs.EventPending || st.EventID != "again/2" {
		t.Fatalf("after the replay: %+v", st)
	}
	publish(t, lc, lifecycle.EventPublished)
	publish(t, lc, lifecycle.EventNothing)
	got := f.received(t, 1)
	if len(got) != 1 || len(got["again/2"]) != 1 {
		t.Fatalf("after the replay received %v", got)
	}
	if e := got["again/2"][0]; e.Completion != 2 || e.Counts.Succeeded != 2 || e.Counts.Failed != 0 {
		t.Fatalf("second completion's event %+v", e)
	}
}

func TestAFailedPublishIsRetriedWithBackoffAndItsErrorShown(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.completed(t, "flaky")
	f.writeResults(t)
	lc, p := f.announcer(t)
	lc.RetryBase, lc.RetryMax = 30*time.Second, 10*time.Minute
	p.fail = []error{errors.New("injected: SNS unavailable")}
	publish(t, lc, lifecycle.EventFailed)
	st := f.status(t, "flaky")
	if st.Event != jobs.EventFailing || st.EventFailures != 1 || !strings.Contains(st.EventError, "SNS unavailable") || st.EventRetryAt == nil {
		t.Fatalf("after a transient failure: %+v", st)
	}
	if in := f.eventRetryIn(t, "flaky"); in < 25*time.Second || in > 31*time.Second {
		t.Fatalf("retried in %s, want RetryBase", in)
	}
	publish(t, lc, lifecycle.EventNothing) // not before its backoff
	f.eventDue(t, "flaky")
	publish(t, lc, lifecycle.EventPublished)
	if st := f.status(t, "flaky"); st.Event != jobs.EventSent || st.EventError != "" || st.EventFailures != 0 {
		t.Fatalf("after the retry: %+v", st)
	}
	if got := f.received(t, 1); len(got["flaky/1"]) != 1 {
		t.Fatalf("received %v", got)
	}

	// A topic that does not exist fails for good: retried at the longest
	// backoff, shown as permanent.
	f.completed(t, "gone")
	f.writeResults(t)
	lc.Events = &events.SNS{API: awsconf.SNS(f.stack.AWS), Topic: f.stack.Resources.CompletionTopicARN + "-missing"}
	publish(t, lc, lifecycle.EventFailed)
	st = f.status(t, "gone")
	if st.Event != jobs.EventFailing || !strings.HasPrefix(st.EventError, "permanent: ") || st.EventFailures != 1 {
		t.Fatalf("after a permanent failure: %+v", st)
	}
	if in := f.eventRetryIn(t, "gone"); in < 9*time.Minute || in > 10*time.Minute+time.Second {
		t.Fatalf("a permanent failure is retried in %s, want RetryMax", in)
	}
	f.eventDue(t, "gone")
	publish(t, lc, lifecycle.EventFailed)
	if st := f.status(t, "gone"); st.EventFailures != 2 {
		t.Fatalf("a permanent failure is not retried: %+v", st)
	}
}

func TestWithoutADestinationTheEventIsSkipped(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.completed(t, "quiet")
	f.writeResults(t)
	publish(t, f.lc, lifecycle.EventSkippedOut) // f.lc has no publisher
	publish(t, f.lc, lifecycle.EventNothing)
	if st := f.status(t, "quiet"); st.Event != jobs.EventSkipped || st.EventID != "quiet/1" {
		t.Fatalf("status %+v", st)
	}
	if got := f.received(t, 0); len(got) != 0 {
		t.Fatalf("received %v", got)
	}
}

func TestTheEventWaitsForTheResultFilesThenGoesWithoutThem(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	lc, _ := f.announcer(t)
	f.completed(t, "nofiles")
	f.s3.failFirst.Store(1000)
	for i := range lifecycle.ResultsPatience {
		publish(t, lc, lifecycle.EventNothing) // the files are pending or failed fewer times
		if i > 0 {
			f.due(t, "nofiles")
		}
		if _, out, err := f.lc.WriteResults(ctx, ""); err != nil || out != lifecycle.Failed {
			t.Fatalf("write %d: %v %v", i, out, err)
		}
	}
	publish(t, lc, lifecycle.EventPublished)
	got := f.received(t, 1)["nofiles/1"]
	if len(got) != 1 || got[0].Results.State != "failed" || len(got[0].Results.Files) != 0 {
		t.Fatalf("received %+v", got)
	}
}

// eventRetryIn reads how long until the job's failed publish is retried.
func (f fixture) eventRetryIn(t *testing.T, job string) time.Duration {
	t.Helper()
	var secs float64
	if err := f.stack.Pool.QueryRow(context.Background(), `SELECT extract(epoch FROM event_retry_at - now())::float8 FROM bulk_import_job WHERE job_id = $1`, job).Scan(&secs); err != nil {
		t.Fatal(err)
	}
	return time.Duration(secs * float64(time.Second))
}

// eventDue makes the job's publish retry due now, as time passing would.
func (f fixture) eventDue(t *testing.T, job string) {
	t.Helper()
	if _, err := f.stack.Pool.Exec(context.Background(), `UPDATE bulk_import_job SET event_retry_at = now() - interval '1 millisecond' WHERE job_id = $1`, job); err != nil {
		t.Fatal(err)
	}
}
