package consume_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cip "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider"

	"github.com/massgov/bulk-user-import/localstack/fineosstub"
	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/breaker"
	"github.com/massgov/bulk-user-import/shared/consume"
	"github.com/massgov/bulk-user-import/shared/fineos"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/message"
	"github.com/massgov/bulk-user-import/shared/metrics"
	"github.com/massgov/bulk-user-import/shared/queue"
	"github.com/massgov/bulk-user-import/shared/register"
	"github.com/massgov/bulk-user-import/shared/retry"
	"github.com/massgov/bulk-user-import/shared/source"
	"github.com/massgov/bulk-user-import/shared/split"
)

type fixture struct {
	stack   *stacktest.Stack
	jobs    *jobs.Store
	queue   *queue.Queue
	dlq     *queue.Queue
	handler *consume.Handler
}

func setup(t *testing.T, maxReceive int) fixture {
	t.Helper()
	s := stacktest.New(t, stacktest.Options{MaxReceiveCount: maxReceive})
	s.AddEmployer(t, "123456789", 1001)
	s.AddEmployer(t, "987654321", 1002)
	sqsClient := awsconf.SQS(s.AWS)
	f := fixture{
		stack: s,
		jobs:  jobs.NewStore(s.Pool),
		queue: queue.New(sqsClient, s.Resources.QueueURL),
		dlq:   queue.New(sqsClient, s.Resources.DLQURL),
	}
	f.handler = &consume.Handler{
		Rows:            lifecycle.New(s.Pool, nil, logging.Discard()),
		Registrar:       s.Registrar(t),
		DLQ:             f.dlq,
		MaxReceiveCount: maxReceive,
		Backoff:         consume.Backoff{Base: time.Second, Max: time.Second},
		Log:             logging.Discard(),
	}
	return f
}

// split records and enqueues a CSV as job.
func (f fixture) split(t *testing.T, job string, force bool, csv string) {
	t.Helper()
	path := t.TempDir() + "/rows.csv"
	if err := os.WriteFile(path, []byte(csv), 0o600); err != nil {
		t.Fatal(err)
	}
	sp := &split.Splitter{Lifecycle: lifecycle.New(f.stack.Pool, nil, logging.Discard()), Queue: f.queue, Opener: source.Opener{}, Log: logging.Discard()}
	if _, err := sp.Run(context.Background(), split.Options{Job: job, ForceRegistration: force, Sources: []string{path}}); err != nil {
		t.Fatal(err)
	}
}

// run runs n workers until the job is done, then stops them.
func (f fixture) run(t *testing.T, job string, n int) []*consume.Worker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	workers := make([]*consume.Worker, n)
	for i := range n {
		workers[i] = &consume.Worker{
			Queue: f.queue, Handler: f.handler, Log: logging.Discard(),
			Config: consume.Config{Concurrency: 4, WaitTime: time.Second, VisibilityTimeout: 5 * time.Second, MessageTimeout: 4 * time.Second,
				MaxReceiveCount: f.handler.MaxReceiveCount},
			Breakers: f.handler.Breakers,
		}
		wg.Go(func() {
			if err := workers[i].Run(ctx); err != nil {
				t.Errorf("worker %d: %v", i, err)
			}
		})
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer wcancel()
	if err := f.waitRowsFinal(wctx, job); err != nil {
		t.Errorf("wait: %v", err)
	}
	cancel()
	wg.Wait()
	return workers
}

// waitRowsFinal waits until no row of the job is queued. The workers here
// run no maintainer: the job's completion is not their business.
func (f fixture) waitRowsFinal(ctx context.Context, job string) error {
	for {
		st, err := f.jobs.Status(ctx, job)
		if err != nil {
			return err
		}
		if st.Queued == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// drainDLQ returns the DLQ's messages, deleting them.
func (f fixture) drainDLQ(t *testing.T) []queue.Message {
	t.Helper()
	var out []queue.Message
	for {
		msgs, err := f.dlq.Receive(context.Background(), 10, 0, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			return out
		}
		out = append(out, msgs...)
	}
}

func TestWorkersRegisterRowsAndDeadLetterFailures(t *testing.T) {
	t.Parallel()
	f := setup(t, 3)
	f.split(t, "job1", true, "fein,email\n123456789,a@b.co\n987654321,a@b.co\n123456789,c@d.co\n000000001,x@y.co\n")
	f.run(t, "job1", 2)

	st, err := f.jobs.Status(context.Background(), "job1")
	if err != nil {
		t.Fatal(err)
	}
	if st.Succeeded != 3 || st.Failed != 1 || st.Queued != 0 {
		t.Fatalf("status %+v", st)
	}
	dl := f.drainDLQ(t)
	if len(dl) != 1 {
		t.Fatalf("%d DLQ messages, want 1", len(dl))
	}
	a := dl[0].Attributes
	if a[message.AttrErrorCode] != register.CodeEmployerNotFound || a[message.AttrJob] != "job1" || a[message.AttrRow] != "4" ||
		a[message.AttrAttempts] != "1" || a[message.AttrErrorMessage] == "" || a[message.AttrFailedAt] == "" {
		t.Fatalf("DLQ attributes %v", a)
	}
	if m, err := message.Decode(dl[0].Body); err != nil || m.Row != 4 {
		t.Fatalf("DLQ body %q: %v", dl[0].Body, err)
	}
	if n := pgtest.Count(t, f.stack.Pool, `SELECT count(*) FROM link_user_leave_administrator WHERE fineos_web_id IS NOT NULL`); n != 3 {
		t.Fatalf("%d registered links", n)
	}
	if n := len(f.stack.Fineos.Users()); n != 3 {
		t.Fatalf("%d FINEOS users", n)
	}
}

func TestEveryMessageDeliveredTwiceConcurrentlyGivesTheSameState(t *testing.T) {
	t.Parallel()
	f := setup(t, 3)
	f.split(t, "job1", true, "fein,email\n123456789,a@b.co\n987654321,a@b.co\n123456789,c@d.co\n")
	// Send every message a second time, as SQS may.
	rows := []int64{1, 2, 3}
	entries := make([]queue.Entry, 0, len(rows))
	for _, r := range rows {
		var email, fein string
		if err := f.stack.Pool.QueryRow(context.Background(), `SELECT email, fein FROM bulk_import_row WHERE job_id = 'job1' AND row_no = $1`, r).Scan(&email, &fein); err != nil {
			t.Fatal(err)
		}
		body, _ := message.Encode(message.Row{Job: "job1", Row: r, Email: email, FEIN: fein, ForceRegistration: true})
		entries = append(entries, queue.Entry{ID: fmt.Sprint(r), Body: body})
	}
	if failed, err := f.queue.SendBatch(context.Background(), entries); err != nil || len(failed) > 0 {
		t.Fatal(err, failed)
	}
	f.run(t, "job1", 3)

	if n := pgtest.Count(t, f.stack.Pool, `SELECT count(*) FROM "user"`); n != 2 {
		t.Fatalf("%d users, want 2", n)
	}
	if n := pgtest.Count(t, f.stack.Pool, `SELECT count(*) FROM link_user_leave_administrator`); n != 3 {
		t.Fatalf("%d links, want 3", n)
	}
	if n := pgtest.Count(t, f.stack.Pool, `SELECT count(*) FROM link_user_role`); n != 2 {
		t.Fatalf("%d role links, want 2", n)
	}
	perPair := map[string]int{}
	for _, u := range f.stack.Fineos.Users() {
		perPair[u.PartyReference+"/"+u.Email]++
	}
	if len(perPair) != 3 {
		t.Fatalf("FINEOS users per pair: %v", perPair)
	}
	for pair, n := range perPair {
		if n != 1 {
			t.Fatalf("pair %s has %d FINEOS users", pair, n)
		}
	}
	if dl := f.drainDLQ(t); len(dl) != 0 {
		t.Fatalf("%d DLQ messages", len(dl))
	}
	api := awsconf.Cognito(f.stack.AWS)
	for _, e := range []string{"a@b.co", "c@d.co"} {
		u, err := api.AdminGetUser(context.Background(), &cip.AdminGetUserInput{UserPoolId: &f.stack.Resources.UserPoolID, Username: aws.String(e)})
		if err != nil || u.UserStatus != "CONFIRMED" {
			t.Fatalf("cognito %s: %v %v", e, u, err)
		}
	}
}

func TestHandleSameMessageConcurrently(t *testing.T) {
	t.Parallel()
	f := setup(t, 3)
	f.split(t, "job1", true, "fein,email\n123456789,a@b.co\n")
	msgs, err := f.queue.Receive(context.Background(), 1, time.Second, time.Minute)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("receive: %v %d", err, len(msgs))
	}
	var wg sync.WaitGroup
	outs := make([]consume.Outcome, 8)
	for i := range outs {
		wg.Go(func() { outs[i] = f.handler.Handle(context.Background(), msgs[0]) })
	}
	wg.Wait()
	for i, o := range outs {
		if o.Action != consume.Ack {
			t.Fatalf("handler %d: %+v", i, o)
		}
	}
	if n := len(f.stack.Fineos.Users()); n != 1 {
		t.Fatalf("%d FINEOS users", n)
	}
	if n := pgtest.Count(t, f.stack.Pool, `SELECT count(*) FROM link_user_leave_administrator`); n != 1 {
		t.Fatalf("%d links", n)
	}
}

func TestBadMessagesGoToTheDLQ(t *testing.T) {
	t.Parallel()
	f := setup(t, 3)
	ctx := context.Background()
	unknown, _ := message.Encode(message.Row{Job: "nojob", Row: 7, Email: "a@b.co", FEIN: "123456789"})
	for _, body := range []string{"not json", `{"v":9}`, unknown} {
		if err := f.queue.Send(ctx, queue.Entry{Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	for handled := 0; handled < 3; {
		msgs, err := f.queue.Receive(ctx, 10, time.Second, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if out := f.handler.Handle(ctx, m); out.Action != consume.Ack {
				t.Fatalf("outcome %+v", out)
			}
		}
		handled += len(msgs)
	}
	var codes []string
	for _, m := range f.drainDLQ(t) {
		codes = append(codes, m.Attributes[message.AttrErrorCode])
	}
	sort.Strings(codes)
	if strings.Join(codes, ",") != "MALFORMED_MESSAGE,MALFORMED_MESSAGE,UNKNOWN_ROW" {
		t.Fatalf("DLQ codes %v", codes)
	}
}

func TestTransientFailureIsRetriedThenSucceeds(t *testing.T) {
	t.Parallel()
	f := setup(t, 3)
	f.handler.Registrar.Retry = retry.Policy{MaxElapsed: -1} // no retry within the attempt: the next attempt must do it
	f.split(t, "job1", true, "fein,email\n123456789,a@b.co\n")
	f.stack.Fineos.InjectFaults(fineosstub.Fault{Status: http.StatusServiceUnavailable})
	f.handler.Backoff = consume.Backoff{Base: time.Second, Max: time.Second}
	f.run(t, "job1", 1)
	var attempts int
	var state string
	if err := f.stack.Pool.QueryRow(context.Background(), `SELECT state, attempts FROM bulk_import_row WHERE job_id = 'job1'`).Scan(&state, &attempts); err != nil {
		t.Fatal(err)
	}
	if state != jobs.Succeeded || attempts != 2 {
		t.Fatalf("state %s after %d attempts", state, attempts)
	}
	if dl := f.drainDLQ(t); len(dl) != 0 {
		t.Fatalf("%d DLQ messages", len(dl))
	}
}

func TestTransientFailureOnTheLastAttemptFailsTheRow(t *testing.T) {
	t.Parallel()
	f := setup(t, 2)
	f.handler.Registrar.Retry = retry.Policy{MaxElapsed: -1}
	f.split(t, "job1", true, "fein,email\n123456789,a@b.co\n")
	f.stack.Fineos.SetFaultRate(1, fineosstub.Fault{Status: http.StatusServiceUnavailable})
	f.run(t, "job1", 1)
	st, _ := f.jobs.Status(context.Background(), "job1")
	if st.Failed != 1 {
		t.Fatalf("status %+v", st)
	}
	dl := f.drainDLQ(t)
	if len(dl) != 1 || dl[0].Attributes[message.AttrErrorCode] != register.CodeFineosUnavailable || dl[0].Attributes[message.AttrAttempts] != "2" {
		t.Fatalf("DLQ %+v", dl)
	}
	probs, _ := f.jobs.Problems(context.Background(), "job1", 10)
	if len(probs) != 1 || !strings.Contains(probs[0].Message, "gave up after 2 attempts") {
		t.Fatalf("problems %+v", probs)
	}
}

func TestShutdownReleasesUnfinishedMessagesAndLosesNothing(t *testing.T) {
	t.Parallel()
	f := setup(t, 3)
	f.split(t, "job1", true, "fein,email\n123456789,a@b.co\n987654321,b@b.co\n")
	f.stack.Fineos.SetLatency(5 * time.Second)
	m := &metrics.Worker{}
	w := &consume.Worker{
		Queue: f.queue, Handler: f.handler, Log: logging.Discard(), Metrics: m,
		Config: consume.Config{Concurrency: 4, WaitTime: time.Second, VisibilityTimeout: 30 * time.Second,
			MessageTimeout: 20 * time.Second, ShutdownTimeout: 500 * time.Millisecond},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	began := time.Now()
	go func() { done <- w.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for w.Stats().InFlight < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	// The fleet budgets know the worker has work (it is not idle).
	if last := m.LastReceive(); last.Before(began) || last.After(time.Now()) {
		t.Fatalf("last received at %v, want since %v", last, began)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("worker did not stop")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("stopping took %s", took)
	}
	if st := w.Stats(); st.Released != 2 {
		t.Fatalf("stats %+v", st)
	}
	st, _ := f.jobs.Status(context.Background(), "job1")
	if st.Queued != 2 {
		t.Fatalf("rows not left queued: %+v", st)
	}
	// Released messages are visible again at once, for another worker.
	f.stack.Fineos.SetLatency(0)
	msgs, err := f.queue.Receive(context.Background(), 10, time.Second, time.Minute)
	if err != nil || len(msgs) != 2 {
		t.Fatalf("after release: %d messages, %v", len(msgs), err)
	}
}

// panicky is a handler that panics.
type panicky struct{ calls chan struct{} }

func (p panicky) Handle(context.Context, queue.Message) consume.Outcome {
	p.calls <- struct{}{}
	panic("boom")
}

func TestAPanickingHandlerDoesNotStopTheWorker(t *testing.T) {
	t.Parallel()
	f := setup(t, 3)
	if err := f.queue.Send(context.Background(), queue.Entry{Body: "x"}); err != nil {
		t.Fatal(err)
	}
	p := panicky{calls: make(chan struct{}, 10)}
	w := &consume.Worker{Queue: f.queue, Handler: p, Log: logging.Discard(),
		Config: consume.Config{Concurrency: 1, WaitTime: time.Second, VisibilityTimeout: 5 * time.Second, MessageTimeout: time.Second}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	select {
	case <-p.calls:
	case <-time.After(10 * time.Second):
		t.Fatal("handler not called")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := w.Stats(); st.Retried != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBackoffGrowsAndIsBounded(t *testing.T) {
	t.Parallel()
	const s = time.Second
	tests := []struct {
		name    string
		backoff consume.Backoff
		steps   map[int]time.Duration // receive count: the step, which a delay is half to all of
	}{
		{"10s to 1m", consume.Backoff{Base: 10 * s, Max: time.Minute},
			map[int]time.Duration{0: 10 * s, 1: 10 * s, 2: 20 * s, 3: 40 * s, 4: time.Minute, 9: time.Minute}},
		{"the worker's defaults, 10s to 5m", consume.Backoff{Base: 10 * s, Max: 5 * time.Minute},
			map[int]time.Duration{1: 10 * s, 2: 20 * s, 3: 40 * s, 4: 80 * s, 5: 160 * s, 6: 5 * time.Minute, 7: 5 * time.Minute, 1000: 5 * time.Minute}},
		{"a base that is not a power of two of the max", consume.Backoff{Base: 3 * s, Max: 12 * time.Hour},
			map[int]time.Duration{1: 3 * s, 2: 6 * s, 5: 48 * s, 14: 3 * s << 13, 15: 12 * time.Hour, 40: 12 * time.Hour}},
		{"milliseconds", consume.Backoff{Base: 7 * time.Millisecond, Max: time.Second},
			map[int]time.Duration{1: 7 * time.Millisecond, 2: 14 * time.Millisecond, 8: 896 * time.Millisecond, 9: s}},
		{"base equal to max", consume.Backoff{Base: time.Minute, Max: time.Minute},
			map[int]time.Duration{1: time.Minute, 2: time.Minute, 30: time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for n, step := range tt.steps {
				lo, hi := step, time.Duration(0)
				for range 300 {
					d := tt.backoff.Delay(n)
					if d < step/2 || d > step {
						t.Fatalf("receive %d: delay %s outside [%s, %s]", n, d, step/2, step)
					}
					lo, hi = min(lo, d), max(hi, d)
				}
				// Jittered over the whole range, not a narrower one.
				if lo > step*6/10 || hi < step*9/10 {
					t.Errorf("receive %d: 300 delays within [%s, %s], want them spread over [%s, %s]", n, lo, hi, step/2, step)
				}
			}
		})
	}
	for _, n := range []int{0, 1, 3, 100} {
		if d := (consume.Backoff{}).Delay(n); d != 0 {
			t.Fatalf("zero backoff gave %s at receive %d", d, n)
		}
		if d := (consume.Backoff{Max: time.Minute}).Delay(n); d != 0 {
			t.Fatalf("zero base gave %s at receive %d", d, n)
		}
	}
}

func TestAFailedReceiveIsRetriedAfter1sDoublingTo30sAndASuccessStartsAgain(t *testing.T) {
	t.Parallel()
	waits := consume.ReceiveRetry.BackOff()
	const s = time.Second
	for i, want := range []time.Duration{s, 2 * s, 4 * s, 8 * s, 16 * s, 30 * s, 30 * s} {
		if got := waits.NextBackOff(); got != want {
			t.Fatalf("wait %d: %s, want %s", i+1, got, want)
		}
	}
	waits.Reset() // a receive succeeded
	if got := waits.NextBackOff(); got != s {
		t.Fatalf("after a success: %s, want 1s", got)
	}
}

func TestHeartbeatKeepsASlowMessageFromASecondWorker(t *testing.T) {
	t.Parallel()
	f := setup(t, 5)
	f.split(t, "job1", true, "fein,email\n123456789,a@b.co\n")
	f.stack.Fineos.SetLatency(7 * time.Second) // more than twice the visibility timeout
	cfg := consume.Config{Concurrency: 2, WaitTime: time.Second, VisibilityTimeout: 3 * time.Second,
		HeartbeatInterval: time.Second, MessageTimeout: 30 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var workers []*consume.Worker
	var wg sync.WaitGroup
	for range 2 {
		w := &consume.Worker{Queue: f.queue, Handler: f.handler, Log: logging.Discard(), Config: cfg}
		workers = append(workers, w)
		wg.Go(func() { _ = w.Run(ctx) })
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer wcancel()
	if err := f.waitRowsFinal(wctx, "job1"); err != nil {
		t.Fatal(err)
	}
	cancel()
	wg.Wait()
	var received, beats int64
	for _, w := range workers {
		received += w.Stats().Received
		beats += w.Stats().Heartbeats
	}
	if received != 1 || beats < 3 {
		t.Fatalf("message received %d times, %d heartbeats; want 1 and at least 3", received, beats)
	}
	if calls := len(f.stack.Fineos.Calls()); calls != 1 {
		t.Fatalf("%d FINEOS calls, want 1", calls)
	}
}

func TestReleaseNearTheLastAttemptSendsAFreshMessage(t *testing.T) {
	t.Parallel()
	f := setup(t, 2)
	f.split(t, "job1", true, "fein,email\n123456789,a@b.co\n")
	f.stack.Fineos.SetLatency(5 * time.Second)
	w := &consume.Worker{Queue: f.queue, Handler: f.handler, Log: logging.Discard(),
		Config: consume.Config{Concurrency: 1, WaitTime: time.Second, VisibilityTimeout: 30 * time.Second,
			MessageTimeout: 20 * time.Second, ShutdownTimeout: 200 * time.Millisecond, MaxReceiveCount: 2}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for deadline := time.Now().Add(20 * time.Second); w.Stats().InFlight == 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	f.stack.Fineos.SetLatency(0)
	var msgs []queue.Message
	for deadline := time.Now().Add(10 * time.Second); len(msgs) == 0 && time.Now().Before(deadline); {
		got, err := f.queue.Receive(context.Background(), 10, time.Second, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, got...)
	}
	if len(msgs) != 1 || msgs[0].ReceiveCount != 1 {
		t.Fatalf("after release: %+v", msgs)
	}
	if more, _ := f.queue.Receive(context.Background(), 10, 0, time.Minute); len(more) != 0 {
		t.Fatalf("the original message is still there: %+v", more)
	}
}

// breakers returns the breakers a worker builds, probing the stack's
// FINEOS stub and Cognito pool, with quick probes.
func (f fixture) breakers(t *testing.T) *breaker.Set {
	t.Helper()
	fc := f.handler.Registrar.Fineos.(*fineos.Client)
	set := breaker.NewSet(
		breaker.New(breaker.Fineos, fc.Probe, logging.Discard()),
		breaker.New(breaker.Cognito, f.handler.Registrar.Cognito.Probe, logging.Discard()),
	)
	for _, d := range []breaker.Dependency{breaker.Fineos, breaker.Cognito} {
		set.Get(d).ProbeInitial, set.Get(d).ProbeMax = 200*time.Millisecond, 400*time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); set.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return set
}

func TestRefusedFINEOSCredentialsPauseRowsAndNeverFailThem(t *testing.T) {
	t.Parallel()
	f := setup(t, 3)
	var b strings.Builder
	b.WriteString("fein,email\n")
	for i := range 30 {
		fmt.Fprintf(&b, "123456789,p%d@b.co\n", i)
	}
	f.split(t, "job1", true, b.String())
	f.handler.Breakers = f.breakers(t)
	// The secret is being rotated: FINEOS refuses the credentials for 3 s.
	f.stack.Fineos.RefuseCredentials(true)
	time.AfterFunc(3*time.Second, func() { f.stack.Fineos.RefuseCredentials(false) })
	start := time.Now()
	workers := f.run(t, "job1", 2)
	if time.Since(start) < 3*time.Second {
		t.Fatal("the rows finished while FINEOS refused the credentials")
	}
	st, _ := f.jobs.Status(context.Background(), "job1")
	if st.Succeeded != 30 || st.Failed != 0 {
		t.Fatalf("status %+v", st)
	}
	if dl := f.drainDLQ(t); len(dl) != 0 {
		t.Fatalf("%d dead letters", len(dl))
	}
	var paused int64
	for _, w := range workers {
		paused += w.Stats().Paused
	}
	// One token request per probe (a few), not one per row and attempt.
	t.Logf("%d token requests, %d messages paused", f.stack.Fineos.Stats().TokenRequests, paused)
	if n := f.stack.Fineos.Stats().TokenRequests; n > 15 || paused == 0 {
		t.Fatalf("%d token requests, %d messages paused", n, paused)
	}
	if n := len(f.stack.Fineos.Users()); n != 30 {
		t.Fatalf("%d FINEOS users", n)
	}
}

func TestOnlyOneDeliveryOfAFailingRowSendsItsDeadLetter(t *testing.T) {
	t.Parallel()
	f := setup(t, 3)
	f.split(t, "job1", false, "fein,email\n000000001,x@y.co\n")
	msgs, err := f.queue.Receive(context.Background(), 1, time.Second, time.Minute)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("receive: %d %v", len(msgs), err)
	}
	// SQS delivers it to eight handlers at once.
	var wg sync.WaitGroup
	results := make([]consume.Outcome, 8)
	for i := range results {
		wg.Go(func() { results[i] = f.handler.Handle(context.Background(), msgs[0]) })
	}
	wg.Wait()
	failed := 0
	for _, o := range results {
		// The others drop their message, or (the failure just claimed)
		// look again later.
		if o.Action != consume.Ack && !(o.Action == consume.Release && o.Result == consume.Paused) {
			t.Fatalf("outcome %+v", o)
		}
		if o.Result == consume.Failed {
			failed++
		}
	}
	if dl := f.drainDLQ(t); len(dl) != 1 || failed != 1 {
		t.Fatalf("%d dead letters, %d deliveries failed the row; want 1 and 1", len(dl), failed)
	}
}

func TestADeadLetterClaimedByAWorkerThatDiedIsSentByTheNextDelivery(t *testing.T) {
	t.Parallel()
	f := setup(t, 3)
	f.split(t, "job1", false, "fein,email\n000000001,x@y.co\n")
	ctx := context.Background()
	// A worker claimed the failure and died before it sent the dead letter.
	if claimed, err := lifecycle.New(f.stack.Pool, nil, logging.Discard()).ClaimFailure(ctx, "job1", 1, register.CodeEmployerNotFound, "employer: no employer has this FEIN"); err != nil || !claimed {
		t.Fatal(claimed, err)
	}
	msgs, err := f.queue.Receive(ctx, 1, time.Second, time.Minute)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("receive: %d %v", len(msgs), err)
	}
	// Delivered again at once, the claim is left to its worker.
	if o := f.handler.Handle(ctx, msgs[0]); o.Action != consume.Release || o.Result != consume.Paused {
		t.Fatalf("outcome while the claim is fresh %+v", o)
	}
	if _, err := f.stack.Pool.Exec(ctx, `UPDATE bulk_import_row SET finished_at = now() - interval '1 minute' WHERE job_id = 'job1'`); err != nil {
		t.Fatal(err)
	}
	if o := f.handler.Handle(ctx, msgs[0]); o.Action != consume.Ack || o.Result != consume.Failed {
		t.Fatalf("outcome %+v", o)
	}
	dl := f.drainDLQ(t)
	if len(dl) != 1 || dl[0].Attributes[message.AttrErrorCode] != register.CodeEmployerNotFound {
		t.Fatalf("dead letters %+v", dl)
	}
	var state string
	if err := f.stack.Pool.QueryRow(ctx, `SELECT dead_letter FROM bulk_import_row WHERE job_id = 'job1'`).Scan(&state); err != nil || state != jobs.DeadLetterSent {
		t.Fatalf("dead_letter %q, %v", state, err)
	}
	// Once sent, a further delivery only drops its message.
	if o := f.handler.Handle(ctx, msgs[0]); o.Result != consume.Skipped {
		t.Fatalf("outcome of a late delivery %+v", o)
	}
	if dl := f.drainDLQ(t); len(dl) != 0 {
		t.Fatalf("%d more dead letters", len(dl))
	}
}

// A row handed back while a dependency's breaker is open shows a sign of
// life (at most once per TouchEvery): a FINEOS outage longer than the
// maintainer's recover-after must not make its rescuer take the row's
// message for lost, send copies and reset its attempts.
func TestAPausedRowShowsASignOfLifeSoTheRescuerLeavesIt(t *testing.T) {
	t.Parallel()
	f := setup(t, 3)
	f.split(t, "job1", true, "fein,email\n123456789,paused@b.co\n")
	ctx := context.Background()
	f.handler.Breakers = f.breakers(t)
	f.stack.Fineos.RefuseCredentials(true)
	f.handler.Breakers.Get(breaker.Fineos).Trip(register.CodeFineosAuthFailed, "token refused", "fix it")
	f.handler.TouchEvery = time.Hour
	// The row's message has been going round for an hour: received,
	// paused, handed back.
	if _, err := f.stack.Pool.Exec(ctx, `UPDATE bulk_import_row SET sent_at = now() - interval '2 hours', updated_at = now() - interval '2 hours' WHERE job_id = 'job1'`); err != nil {
		t.Fatal(err)
	}
	lost := func() int64 {
		t.Helper()
		byJob, err := f.jobs.JobsToResend(ctx, jobs.Selection{IdleFor: 30 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return byJob["job1"]
	}
	if lost() != 1 {
		t.Fatal("the idle row is not selected before the pause (the test cannot tell)")
	}
	msgs, err := f.queue.Receive(ctx, 1, time.Second, time.Minute)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("receive: %d %v", len(msgs), err)
	}
	if o := f.handler.Handle(ctx, msgs[0]); o.Result != consume.Paused || o.Action != consume.Release {
		t.Fatalf("outcome %+v, want paused", o)
	}
	if n := lost(); n != 0 {
		t.Fatalf("a paused row looks lost to the rescuer (%d)", n)
	}
	var attempts int
	var touched time.Time
	if err := f.stack.Pool.QueryRow(ctx, `SELECT attempts, updated_at FROM bulk_import_row WHERE job_id = 'job1'`).Scan(&attempts, &touched); err != nil || attempts != 0 {
		t.Fatalf("attempts %d, %v: a pause is not an attempt", attempts, err)
	}
	// Paused again within TouchEvery: no second write.
	if o := f.handler.Handle(ctx, msgs[0]); o.Result != consume.Paused {
		t.Fatalf("outcome %+v", o)
	}
	var again time.Time
	if err := f.stack.Pool.QueryRow(ctx, `SELECT updated_at FROM bulk_import_row WHERE job_id = 'job1'`).Scan(&again); err != nil || !again.Equal(touched) {
		t.Fatalf("touched again within TouchEvery: %s then %s (%v)", touched, again, err)
	}
}
