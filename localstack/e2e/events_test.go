package e2e

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/massgov/bulk-user-import/localstack/faultproxy"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/events"
)

// receivedEvent is one message of the receiver queue: its raw body and
// the event in it.
type receivedEvent struct {
	body  string
	event events.Event
}

// drainEvents receives every message of the stack's completion receiver
// queue until at least want arrived and the queue then stayed empty for
// three receives (3 s), or until the deadline; it deletes what it got.
func drainEvents(t *testing.T, s *stacktest.Stack, want int, timeout time.Duration) []receivedEvent {
	t.Helper()
	ctx := context.Background()
	q := awsconf.SQS(s.AWS)
	var got []receivedEvent
	empty := 0
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline) && (len(got) < want || empty < 3); {
		out, err := q.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &s.Resources.CompletionQueueURL, MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Messages) == 0 {
			empty++
			continue
		}
		empty = 0
		for _, m := range out.Messages {
			r := receivedEvent{body: aws.ToString(m.Body)}
			if err := json.Unmarshal([]byte(r.body), &r.event); err != nil {
				t.Fatalf("not an event: %q: %v", r.body, err)
			}
			got = append(got, r)
			if _, err := q.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &s.Resources.CompletionQueueURL, ReceiptHandle: m.ReceiptHandle}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return got
}

// noPersonalData fails the test if an event's body holds one of the
// emails, FEINs or names of the import.
func noPersonalData(t *testing.T, got []receivedEvent, pii ...string) {
	t.Helper()
	for _, r := range got {
		for _, p := range pii {
			if strings.Contains(strings.ToLower(r.body), strings.ToLower(p)) {
				t.Errorf("event %s holds %q: %s", r.event.EventID, p, r.body)
			}
		}
	}
}

// matchesStatus checks the event against splitter status --json.
func matchesStatus(t *testing.T, e events.Event, st map[string]any) {
	t.Helper()
	counts := map[string]int64{"total": e.Counts.Total, "succeeded": e.Counts.Succeeded, "failed": e.Counts.Failed,
		"rejected": e.Counts.Rejected, "duplicate": e.Counts.Duplicate, "cancelled": e.Counts.Cancelled}
	for k, v := range counts {
		if st[k] != float64(v) {
			t.Errorf("event %s: %s %d, status says %v", e.EventID, k, v, st[k])
		}
	}
	if st["event"] != "sent" || st["event_id"] != e.EventID || st["completion"] != float64(e.Completion) {
		t.Errorf("status event %v %v completion %v; event %s", st["event"], st["event_id"], st["completion"], e.EventID)
	}
	if loc, _ := st["results_location"].(string); e.Results.State != "written" || len(e.Results.Files) != 2 || e.Results.Files[0] != loc+"SUCCEEDED.csv" {
		t.Errorf("event results %+v, status location %q", e.Results, loc)
	}
}

func TestOneCompletionEventPerCompletionEndToEnd(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{MaxReceiveCount: 3})
	s.AddEmployer(t, "123456789", 1001)
	s.AddEmployer(t, "987654321", 1002)
	envv := env(s, "COMPLETION_SNS_TOPIC_ARN="+s.Resources.CompletionTopicARN)
	startWorker(t, envv)
	startWorker(t, envv)
	const job = "events-e2e"
	file := writeRows(t, "ev.csv", "123456789,alice.events@example.com,Alice Eventson",
		"987654321,bob.events@example.com,Bob Eventson",
		"000000001,carol.events@example.com,Carol Eventson", // unknown FEIN: fails
		"123456789,not an email,Dan Eventson")               // rejected
	pii := []string{"alice.events", "bob.events", "carol.events", "Eventson", "123456789", "987654321", "000000001", "@example.com"}
	if r := runBin(t, envv, "splitter", "--job", job, "--wait", "--poll-interval", "200ms", file); r.Code != 3 {
		t.Fatalf("splitter: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	got := drainEvents(t, s, 1, 60*time.Second)
	if len(got) != 1 {
		t.Fatalf("%d events received, want exactly one: %v", len(got), got)
	}
	noPersonalData(t, got, pii...)
	e := got[0].event
	if e.EventID != job+"/1" || e.Type != events.TypeCompleted || e.Job != job || e.Counts.Failed != 1 || e.Counts.Rejected != 1 ||
		e.Counts.Succeeded != 2 || e.FailuresByCode["EMPLOYER_NOT_FOUND"] != 1 || e.FailuresByCode["INVALID_EMAIL"] != 1 || e.Version != 1 {
		t.Fatalf("event %+v", e)
	}
	matchesStatus(t, e, status(t, envv, job))
	r := runBin(t, envv, "splitter", "status", job)
	if !strings.Contains(r.Stdout, "completion event: "+job+"/1 sent ") {
		t.Errorf("status does not show the event:\n%s", r.Stdout)
	}

	// The data is fixed and the dead letter replayed: the job completes
	// again, and that completion has its own event.
	s.AddEmployer(t, "000000001", 1003)
	if r := runBin(t, envv, "worker", "dlq", "replay", "--job", job); r.Code != 0 || !strings.Contains(r.Stdout, "replay: 1 moved") {
		t.Fatalf("replay: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	got = drainEvents(t, s, 1, 60*time.Second)
	if len(got) != 1 {
		t.Fatalf("after the replay %d events received, want exactly one: %v", len(got), got)
	}
	noPersonalData(t, got, pii...)
	e = got[0].event
	if e.EventID != job+"/2" || e.Completion != 2 || e.Counts.Succeeded != 3 || e.Counts.Failed != 0 || e.FailuresByCode["EMPLOYER_NOT_FOUND"] != 0 {
		t.Fatalf("second event %+v", e)
	}
	matchesStatus(t, e, status(t, envv, job))
}

func TestAStalledLeaderPublishingLeavesOneEventPerCompletion(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	s.AddEmployer(t, "123456789", 1001)
	topic := "COMPLETION_SNS_TOPIC_ARN=" + s.Resources.CompletionTopicARN
	envv := env(s, topic)
	// The first worker publishes through a proxy whose gate holds SNS
	// Publish: it is stopped right there, after the completion committed
	// and before its event reached SNS.
	proxy, err := faultproxy.NewAWS(s.EndpointURL)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	gate := proxy.Hold("Publish")
	t.Cleanup(gate.Release) // before the server closes: it waits for held requests
	const job = "events-race"
	if r := runBin(t, envv, "splitter", "--job", job, writeRows(t, "race.csv", "123456789,race.one@example.com,Race One",
		"123456789,race.two@example.com,Race Two")); r.Code != 0 {
		t.Fatalf("splitter: exit %d %s", r.Code, r.Stderr)
	}
	leases := []string{"--leader-lease", "2s", "--event-lease", "3s"}
	w1 := startWorker(t, env(s, topic, "AWS_ENDPOINT_URL_SNS="+srv.URL), leases...)
	t.Cleanup(func() { _ = w1.Signal(syscall.SIGCONT) }) // before it is stopped
	select {
	case <-gate.Held():
	case <-time.After(60 * time.Second):
		t.Fatalf("no Publish was held\n%s", w1.Output())
	}
	if leaderPID(t, s) != w1.PID() {
		t.Fatalf("the leader is pid %d, not the first worker %d", leaderPID(t, s), w1.PID())
	}
	if err := w1.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// A second worker, and maintainer, takes over once the first's lease
	// and its claim on the event have run out.
	w2 := startWorker(t, envv, leases...)
	got := drainEvents(t, s, 1, 60*time.Second)
	if len(got) != 1 || got[0].event.EventID != job+"/1" {
		t.Fatalf("while the first leader is stopped: %d events %v, want one", len(got), got)
	}
	if leaderPID(t, s) != w2.PID() {
		t.Errorf("the leader is pid %d, want the second worker %d", leaderPID(t, s), w2.PID())
	}
	// The stalled leader resumes: its publish's deadline has passed, its
	// held request is abandoned, and its claim is no longer its own: it
	// records nothing. Only then does the gate open.
	if err := w1.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "the resumed leader's held publish abandoned", func() bool { return gate.Abandoned() > 0 })
	gate.Release()
	waitUntil(t, 20*time.Second, "the resumed leader's outcome logged", func() bool {
		out := w1.Output()
		return strings.Contains(out, "completion event not published now") || strings.Contains(out, "the claim was taken over by another announcer")
	})
	// At rest: still exactly one event for the completion.
	if more := drainEvents(t, s, 0, 20*time.Second); len(more) != 0 {
		t.Fatalf("after the stalled leader resumed, %d more events: %v", len(more), more)
	}
	noPersonalData(t, got, "race.one", "race.two", "Race One", "123456789", "@example.com")
	st := status(t, envv, job)
	if st["event"] != "sent" || st["event_id"] != job+"/1" || st["event_failures"] != nil || st["event_error"] != nil {
		t.Fatalf("status after the race: %v", st)
	}
	if logLines(w1.Output(), `"msg":"completion event published"`) != 0 {
		t.Errorf("the stalled leader says it published:\n%s", w1.Output())
	}
	if logLines(w2.Output(), `"msg":"completion event published"`, `"job":"`+job+`"`) != 1 {
		t.Errorf("the second worker did not publish the event once:\n%s", w2.Output())
	}
}
