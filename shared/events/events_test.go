package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/events"
)

// The test's personal data: none of it may appear in an event.
const (
	testEmail = "jane.doe@example.com"
	testFEIN  = "123456789"
)

func sample(t *testing.T) events.Event {
	t.Helper()
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	finished := created.Add(time.Hour)
	typ, state := events.TypeOf(true)
	return events.Event{
		Version: events.Version, EventID: events.ID("job-1", 2), Type: typ, Job: "job-1", Completion: 2, State: state,
		Counts:         events.Counts{Total: 5, Succeeded: 2, Failed: 1, Rejected: 1, Cancelled: 1},
		FailuresByCode: map[string]int64{"EMPLOYER_NOT_FOUND": 1, "INVALID_EMAIL": 1, "CANCELLED": 1},
		Results:        events.Results{State: "written", Files: []string{"s3://b/job-1/SUCCEEDED.csv", "s3://b/job-1/FAILED.csv"}},
		CreatedAt:      created, StartedAt: &created, FinishedAt: &finished,
		CancelReason: events.Reason("operator: wrong file, see " + testEmail + " fein " + testFEIN + " " + strings.Repeat("x", 400)),
	}
}

func TestReasonIsMaskedAndBounded(t *testing.T) {
	t.Parallel()
	r := sample(t).CancelReason
	if strings.Contains(r, testEmail) || strings.Contains(r, testFEIN) || len([]rune(r)) > events.MaxReasonLen {
		t.Fatalf("reason %q (%d characters)", r, len([]rune(r)))
	}
	if events.Reason("short") != "short" {
		t.Fatal("a short reason changed")
	}
}

func TestSNSDeliversTheEventRawWithItsAttributesAndNoPersonalData(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	ctx := context.Background()
	p := &events.SNS{API: awsconf.SNS(s.AWS), Topic: s.Resources.CompletionTopicARN}
	e := sample(t)
	if err := p.Publish(ctx, e); err != nil {
		t.Fatal(err)
	}
	q := awsconf.SQS(s.AWS)
	var msgs []sqstypes.Message
	deadline := time.Now().Add(10 * time.Second)
	for len(msgs) == 0 && time.Now().Before(deadline) {
		out, err := q.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &s.Resources.CompletionQueueURL, MaxNumberOfMessages: 10,
			WaitTimeSeconds: 1, MessageAttributeNames: []string{"All"}})
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, out.Messages...)
	}
	if len(msgs) != 1 {
		t.Fatalf("%d messages received, want 1", len(msgs))
	}
	body := aws.ToString(msgs[0].Body)
	if strings.Contains(body, testEmail) || strings.Contains(body, testFEIN) {
		t.Fatalf("personal data in the event: %s", body)
	}
	var got events.Event
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	if got.EventID != "job-1/2" || got.Type != events.TypeCancelled || got.State != events.StateCancelled || got.Counts != e.Counts ||
		got.FailuresByCode["EMPLOYER_NOT_FOUND"] != 1 || len(got.Results.Files) != 2 || !got.CreatedAt.Equal(e.CreatedAt) || got.Version != 1 {
		t.Fatalf("received %+v", got)
	}
	var raw map[string]any
	_ = json.Unmarshal([]byte(body), &raw)
	for _, k := range []string{"version", "event_id", "type", "job", "state", "counts", "failures_by_code", "results", "created_at", "started_at", "finished_at", "cancel_reason"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("the event lacks %q: %s", k, body)
		}
	}
	attrs := msgs[0].MessageAttributes
	for k, want := range map[string]string{"job": "job-1", "state": "cancelled", "event_id": "job-1/2", "type": events.TypeCancelled} {
		if got := aws.ToString(attrs[k].StringValue); got != want {
			t.Errorf("attribute %s = %q, want %q (%v)", k, got, want, attrs)
		}
	}
}

func TestSNSErrorsArePermanentOnlyWhenRetryingCannotCure(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	p := &events.SNS{API: awsconf.SNS(s.AWS), Topic: s.Resources.CompletionTopicARN + "-missing"}
	err := p.Publish(context.Background(), sample(t))
	if err == nil || !events.IsPermanent(err) {
		t.Fatalf("a missing topic: %v, want a permanent error", err)
	}
	// A server that is down: transient.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	defer srv.Close()
	down := &events.SNS{API: awsconf.SNS(stacktest.AWSConfig(t, srv.URL)), Topic: "arn:aws:sns:us-east-1:000000000000:t"}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := down.Publish(ctx, sample(t)); err == nil || events.IsPermanent(err) {
		t.Fatalf("an unavailable service: %v, want a transient error", err)
	}
}

func TestEventBridgePutsTheEventOnTheBus(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	ctx := context.Background()
	eb := awsconf.EventBridge(s.AWS)
	bus, rule := "bus-"+stacktest.Suffix(), "rule-"+stacktest.Suffix()
	if _, err := eb.CreateEventBus(ctx, &eventbridge.CreateEventBusInput{Name: &bus}); err != nil {
		t.Fatal(err)
	}
	pattern := `{"source":["bulk-user-import"]}`
	if _, err := eb.PutRule(ctx, &eventbridge.PutRuleInput{Name: &rule, EventBusName: &bus, EventPattern: &pattern}); err != nil {
		t.Fatal(err)
	}
	if _, err := eb.PutTargets(ctx, &eventbridge.PutTargetsInput{Rule: &rule, EventBusName: &bus, Targets: []ebtypes.Target{
		{Id: aws.String("t"), Arn: aws.String("arn:aws:logs:us-east-1:000000000000:log-group:" + rule)}}}); err != nil {
		t.Fatal(err)
	}
	p := &events.EventBridge{API: eb, Bus: bus}
	if err := p.Publish(ctx, sample(t)); err != nil {
		t.Fatal(err)
	}
	// kumo records what its rules matched.
	resp, err := http.Get(s.EndpointURL + "/kumo/eventbridge/delivered-events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var delivered []struct{ Source, DetailType, Detail, EventBusName, RuleName string }
	if err := json.NewDecoder(resp.Body).Decode(&delivered); err != nil {
		t.Fatal(err)
	}
	var mine []events.Event
	for _, d := range delivered {
		if d.RuleName != rule {
			continue
		}
		if d.Source != events.Source || d.DetailType != events.DetailCancelled || d.EventBusName != bus {
			t.Errorf("delivered %+v", d)
		}
		if strings.Contains(d.Detail, testEmail) || strings.Contains(d.Detail, testFEIN) {
			t.Errorf("personal data in the detail: %s", d.Detail)
		}
		var e events.Event
		if err := json.Unmarshal([]byte(d.Detail), &e); err != nil {
			t.Fatal(err)
		}
		mine = append(mine, e)
	}
	if len(mine) != 1 || mine[0].EventID != "job-1/2" {
		t.Fatalf("delivered %+v", mine)
	}
}

// ebServer answers PutEvents as EventBridge does (JSON 1.1), with body.
func ebServer(t *testing.T, status int, body string) *events.EventBridge {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in, _ := io.ReadAll(r.Body)
		if r.Header.Get("X-Amz-Target") != "AWSEvents.PutEvents" || !strings.Contains(string(in), `"EventBusName":"b"`) {
			t.Errorf("request %s %s", r.Header.Get("X-Amz-Target"), in)
		}
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return &events.EventBridge{API: awsconf.EventBridge(stacktest.AWSConfig(t, srv.URL)), Bus: "b"}
}

func TestEventBridgeRefusedEntriesAreErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := ebServer(t, 200, `{"FailedEntryCount":1,"Entries":[{"ErrorCode":"InternalFailure","ErrorMessage":"try again"}]}`)
	if err := p.Publish(ctx, sample(t)); err == nil || events.IsPermanent(err) || !strings.Contains(err.Error(), "InternalFailure") {
		t.Fatalf("a refused entry: %v, want a transient error naming its code", err)
	}
	p = ebServer(t, 200, `{"FailedEntryCount":1,"Entries":[{"ErrorCode":"AccessDeniedException","ErrorMessage":"no"}]}`)
	if err := p.Publish(ctx, sample(t)); !events.IsPermanent(err) {
		t.Fatalf("an entry refused for permissions: %v, want permanent", err)
	}
	p = ebServer(t, 400, `{"__type":"ResourceNotFoundException","message":"Event bus b does not exist."}`)
	err := p.Publish(ctx, sample(t))
	var nf *ebtypes.ResourceNotFoundException
	if !events.IsPermanent(err) || !errors.As(err, &nf) {
		t.Fatalf("a missing bus: %v, want a permanent ResourceNotFoundException", err)
	}
	p = ebServer(t, 200, `{"FailedEntryCount":0,"Entries":[{"EventId":"x"}]}`)
	if err := p.Publish(ctx, sample(t)); err != nil {
		t.Fatal(err)
	}
}

func TestMultiPublishesToEveryDestination(t *testing.T) {
	t.Parallel()
	ok := ebServer(t, 200, `{"FailedEntryCount":0,"Entries":[{"EventId":"x"}]}`)
	bad := ebServer(t, 200, `{"FailedEntryCount":1,"Entries":[{"ErrorCode":"InternalFailure"}]}`)
	m := events.Multi{ok, bad}
	if err := m.Publish(context.Background(), sample(t)); err == nil {
		t.Fatal("a failed destination is not an error")
	}
	if m.Destination() != "eventbridge:b, eventbridge:b" {
		t.Fatal(m.Destination())
	}
}
