package queue_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/queue"
)

func TestBatchesRespectCountAndSize(t *testing.T) {
	t.Parallel()
	var entries []queue.Entry
	for i := range 25 {
		entries = append(entries, queue.Entry{ID: fmt.Sprint(i), Body: "x"})
	}
	b, err := queue.Batches(entries)
	if err != nil || len(b) != 3 || len(b[0]) != 10 || len(b[2]) != 5 {
		t.Fatalf("got %d batches, %v", len(b), err)
	}
	big := strings.Repeat("x", queue.MaxBatchBytes/3+100)
	entries = []queue.Entry{{ID: "a", Body: big}, {ID: "b", Body: big}, {ID: "c", Body: big}, {ID: "d", Body: "y"}}
	b, err = queue.Batches(entries)
	if err != nil || len(b) != 2 || len(b[0]) != 2 {
		t.Fatalf("size split: %d batches, %v", len(b), err)
	}
	if _, err := queue.Batches([]queue.Entry{{ID: "z", Body: strings.Repeat("x", queue.MaxBatchBytes+1)}}); err == nil {
		t.Fatal("oversized message accepted")
	}
}

func TestParseRedrivePolicyAcceptsNumberOrString(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{
		`{"deadLetterTargetArn":"arn:x","maxReceiveCount":5}`,
		`{"deadLetterTargetArn":"arn:x","maxReceiveCount":"5"}`,
	} {
		p, err := queue.ParseRedrivePolicy(raw)
		if err != nil || p.MaxReceiveCount != 5 || p.DeadLetterTargetARN != "arn:x" {
			t.Errorf("%s: %+v, %v", raw, p, err)
		}
	}
	for _, raw := range []string{`{}`, `{"maxReceiveCount":0}`, `{"maxReceiveCount":"x"}`, `nope`} {
		if _, err := queue.ParseRedrivePolicy(raw); err == nil {
			t.Errorf("%s accepted", raw)
		}
	}
}

func TestSendReceiveDeleteAgainstEmulator(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{MaxReceiveCount: 4})
	q := queue.New(awsconf.SQS(s.AWS), s.Resources.QueueURL)
	ctx := context.Background()

	p, err := q.Redrive(ctx)
	if err != nil || p.MaxReceiveCount != 4 || p.DeadLetterTargetARN != s.Resources.DLQARN {
		t.Fatalf("redrive %+v, %v", p, err)
	}
	var entries []queue.Entry
	for i := range 10 {
		entries = append(entries, queue.Entry{ID: fmt.Sprint(i), Body: fmt.Sprintf("body-%d", i), Attributes: map[string]string{"k": "v"}})
	}
	failed, err := q.SendBatch(ctx, entries)
	if err != nil || len(failed) != 0 {
		t.Fatalf("send: %v %v", failed, err)
	}
	var got []queue.Message
	for len(got) < 10 {
		msgs, err := q.Receive(ctx, 10, time.Second, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, msgs...)
	}
	for _, m := range got {
		if m.ReceiveCount != 1 || m.Attributes["k"] != "v" || !strings.HasPrefix(m.Body, "body-") || m.SentAt.IsZero() {
			t.Fatalf("message %+v", m)
		}
	}
	handles := make([]string, len(got))
	for i, m := range got {
		handles[i] = m.ReceiptHandle
	}
	if failed, err := q.DeleteBatch(ctx, handles); err != nil || len(failed) != 0 {
		t.Fatalf("delete: %v %v", failed, err)
	}
	// A second delete with the same (now stale) handles is not an error of
	// the call; the emulator refuses the entries as stale (AWS accepts
	// them), and they say so.
	stale, err := q.DeleteBatch(ctx, handles[:2])
	if err != nil {
		t.Fatalf("stale delete: %v", err)
	}
	for _, f := range stale {
		if !f.Stale() {
			t.Fatalf("stale delete: %v", f)
		}
	}
	if msgs, err := q.Receive(ctx, 10, 0, 30*time.Second); err != nil || len(msgs) != 0 {
		t.Fatalf("queue not empty: %d %v", len(msgs), err)
	}
}

func TestChangeVisibilityReleasesAMessage(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	q := queue.New(awsconf.SQS(s.AWS), s.Resources.QueueURL)
	ctx := context.Background()
	if err := q.Send(ctx, queue.Entry{Body: "x"}); err != nil {
		t.Fatal(err)
	}
	msgs, err := q.Receive(ctx, 1, time.Second, time.Minute)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("receive: %d %v", len(msgs), err)
	}
	if err := q.ChangeVisibility(ctx, msgs[0].ReceiptHandle, 0); err != nil {
		t.Fatal(err)
	}
	again, err := q.Receive(ctx, 1, 0, time.Minute)
	if err != nil || len(again) != 1 || again[0].ReceiveCount != 2 {
		t.Fatalf("after release: %+v %v", again, err)
	}
}

func TestMissingQueueIsRecognised(t *testing.T) {
	t.Parallel()
	cfg := stacktest.AWSConfig(t, stacktest.Emulator(t).URL)
	api := awsconf.SQS(cfg)
	q := queue.New(api, "http://localhost:4566/000000000000/no-such-queue-"+stacktest.Suffix())
	_, err := q.Receive(context.Background(), 1, 0, time.Second)
	if err == nil || !queue.IsQueueMissing(err) {
		t.Fatalf("err = %v, want a missing-queue error", err)
	}
	_, err = api.GetQueueUrl(context.Background(), &sqs.GetQueueUrlInput{QueueName: aws.String("nope-" + stacktest.Suffix())})
	if !queue.IsQueueMissing(err) {
		t.Fatalf("GetQueueUrl err = %v", err)
	}
}

func TestDepthAndRetention(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	ctx := context.Background()
	q := queue.New(awsconf.SQS(s.AWS), s.Resources.QueueURL)
	for i := range 3 {
		if err := q.Send(ctx, queue.Entry{Body: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	d, err := q.Depth(ctx)
	if err != nil || d.Visible != 3 || d.Waiting() != 3 || d.InFlight != 0 {
		t.Fatalf("depth %+v, %v", d, err)
	}
	if msgs, err := q.Receive(ctx, 2, 0, time.Minute); err != nil || len(msgs) != 2 {
		t.Fatalf("receive: %d, %v", len(msgs), err)
	}
	if d, err = q.Depth(ctx); err != nil || d.Visible != 1 || d.InFlight != 2 {
		t.Fatalf("depth after receiving two %+v, %v", d, err)
	}
	// The bootstrap keeps dead letters for SQS's longest, 14 days.
	dlq := queue.New(awsconf.SQS(s.AWS), s.Resources.DLQURL)
	if r, err := dlq.Retention(ctx); err != nil || r != 14*24*time.Hour {
		t.Fatalf("DLQ retention %s, %v", r, err)
	}
	if _, err := queue.New(awsconf.SQS(s.AWS), s.Resources.QueueURL+"-missing").Depth(ctx); !queue.IsQueueMissing(err) {
		t.Fatalf("missing queue: %v", err)
	}
}
