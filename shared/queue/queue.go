// Package queue wraps the SQS calls of the import: batched sends, long-poll
// receives, batched deletes, visibility changes, and reading the queue's
// redrive policy. It enforces SQS's size limits itself, since emulators do
// not.
package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
)

// SQS limits.
const (
	MaxBatchEntries = 10
	// MaxBatchBytes bounds a message and a whole batch. SQS allows 1 MiB
	// today; 256 KiB is the long-standing limit and ample for our messages.
	MaxBatchBytes = 256 << 10
	// MaxWait is the longest long poll SQS allows.
	MaxWait = 20 * time.Second
	// MaxDelay is the longest delay SQS allows on a message sent.
	MaxDelay = 15 * time.Minute
	// DefaultMaxReceiveCount is the import queue's maxReceiveCount that the
	// bootstrap and the deployment set: five attempts per row.
	DefaultMaxReceiveCount = 5
)

// API lists the SQS calls the import makes.
type API interface {
	SendMessage(ctx context.Context, in *sqs.SendMessageInput, opts ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
	SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, opts ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, opts ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, opts ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error)
	ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, opts ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
	ChangeMessageVisibilityBatch(ctx context.Context, in *sqs.ChangeMessageVisibilityBatchInput, opts ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error)
	GetQueueAttributes(ctx context.Context, in *sqs.GetQueueAttributesInput, opts ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
}

var _ API = (*sqs.Client)(nil)

// Queue is one SQS queue.
type Queue struct {
	api API
	url string
}

// New returns the queue at url.
func New(api API, url string) *Queue { return &Queue{api: api, url: url} }

// URL returns the queue's URL.
func (q *Queue) URL() string { return q.url }

// Entry is a message to send. ID must be unique within a batch.
type Entry struct {
	ID         string
	Body       string
	Attributes map[string]string
	Delay      time.Duration // before the message can be received (at most MaxDelay)
}

func (e Entry) size() int {
	n := len(e.Body)
	for k, v := range e.Attributes {
		n += len(k) + len(v) + len("String")
	}
	return n
}

// EntryError is an entry SQS refused within a batch.
type EntryError struct {
	ID          string
	Code        string
	Message     string
	SenderFault bool // the entry itself is wrong: retrying will not help
}

func (e EntryError) Error() string {
	return fmt.Sprintf("entry %s: %s: %s", e.ID, e.Code, e.Message)
}

// codeStaleHandle is SQS's code for a receipt handle that no longer names
// the message's current receive (it was received again, or deleted).
const codeStaleHandle = "ReceiptHandleIsInvalid"

// Stale reports whether the entry was refused because its receipt handle
// is stale: the message was handled (or received again) by someone else.
// For a worker acknowledging a message that is harmless; for a tool that
// moves messages it means the message was not deleted.
func (e EntryError) Stale() bool { return e.Code == codeStaleHandle }

// Batches splits entries into batches within SQS's count and size limits.
// An entry too large for any batch is an error.
func Batches(entries []Entry) ([][]Entry, error) {
	var out [][]Entry
	var cur []Entry
	size := 0
	for _, e := range entries {
		s := e.size()
		if s > MaxBatchBytes {
			return nil, fmt.Errorf("message %s of %d bytes exceeds the %d byte limit", e.ID, s, MaxBatchBytes)
		}
		if len(cur) == MaxBatchEntries || size+s > MaxBatchBytes {
			out = append(out, cur)
			cur, size = nil, 0
		}
		cur = append(cur, e)
		size += s
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out, nil
}

// SendBatch sends up to ten entries in one call. A call-level error is
// returned as err; entries SQS refused come back in failed.
func (q *Queue) SendBatch(ctx context.Context, entries []Entry) (failed []EntryError, err error) {
	if len(entries) == 0 {
		return nil, nil
	}
	if b, err := Batches(entries); err != nil || len(b) != 1 {
		return nil, fmt.Errorf("sqs SendMessageBatch: %d entries do not fit one batch (%v)", len(entries), err)
	}
	in := &sqs.SendMessageBatchInput{QueueUrl: &q.url, Entries: make([]types.SendMessageBatchRequestEntry, len(entries))}
	for i, e := range entries {
		in.Entries[i] = types.SendMessageBatchRequestEntry{Id: aws.String(e.ID), MessageBody: aws.String(e.Body), MessageAttributes: attributes(e.Attributes),
			DelaySeconds: delaySeconds(e.Delay)}
	}
	out, err := q.api.SendMessageBatch(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("sqs SendMessageBatch: %w", err)
	}
	return batchErrors(out.Failed), nil
}

// Send sends one message.
func (q *Queue) Send(ctx context.Context, e Entry) error {
	if e.size() > MaxBatchBytes {
		return fmt.Errorf("sqs SendMessage: message of %d bytes exceeds the %d byte limit", e.size(), MaxBatchBytes)
	}
	if _, err := q.api.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &q.url, MessageBody: &e.Body, MessageAttributes: attributes(e.Attributes),
		DelaySeconds: delaySeconds(e.Delay)}); err != nil {
		return fmt.Errorf("sqs SendMessage: %w", err)
	}
	return nil
}

func delaySeconds(d time.Duration) int32 {
	return int32(min(max(d, 0), MaxDelay) / time.Second)
}

func attributes(m map[string]string) map[string]types.MessageAttributeValue {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]types.MessageAttributeValue, len(m))
	for k, v := range m {
		out[k] = types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
	}
	return out
}

// Message is a received message.
type Message struct {
	ID            string
	ReceiptHandle string
	Body          string
	ReceiveCount  int       // ApproximateReceiveCount: 1 on the first delivery
	SentAt        time.Time // when it was first sent
	Attributes    map[string]string
}

// Receive long-polls for up to n messages (at most ten), hiding them for
// visibility. It returns no error and no message when the wait ends empty.
func (q *Queue) Receive(ctx context.Context, n int, wait, visibility time.Duration) ([]Message, error) {
	out, err := q.api.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl:                    &q.url,
		MaxNumberOfMessages:         int32(min(max(n, 1), MaxBatchEntries)),
		WaitTimeSeconds:             int32(min(wait, MaxWait) / time.Second),
		VisibilityTimeout:           int32(visibility / time.Second),
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount, types.MessageSystemAttributeNameSentTimestamp},
		MessageAttributeNames:       []string{"All"},
	})
	if err != nil {
		return nil, fmt.Errorf("sqs ReceiveMessage: %w", err)
	}
	msgs := make([]Message, 0, len(out.Messages))
	for _, m := range out.Messages {
		msg := Message{ID: aws.ToString(m.MessageId), ReceiptHandle: aws.ToString(m.ReceiptHandle), Body: aws.ToString(m.Body)}
		msg.ReceiveCount, _ = strconv.Atoi(m.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)])
		if ms, err := strconv.ParseInt(m.Attributes[string(types.MessageSystemAttributeNameSentTimestamp)], 10, 64); err == nil {
			msg.SentAt = time.UnixMilli(ms)
		}
		if len(m.MessageAttributes) > 0 {
			msg.Attributes = make(map[string]string, len(m.MessageAttributes))
			for k, v := range m.MessageAttributes {
				msg.Attributes[k] = aws.ToString(v.StringValue)
			}
		}
		msgs = append(msgs, msg)
	}
	return msgs, nil
}

// DeleteBatch deletes up to ten messages by receipt handle. Entries SQS
// refused come back in failed, with their index in the input as ID; stale
// receipt handles among them (EntryError.Stale) were not deleted either.
func (q *Queue) DeleteBatch(ctx context.Context, handles []string) (failed []EntryError, err error) {
	if len(handles) == 0 {
		return nil, nil
	}
	if len(handles) > MaxBatchEntries {
		return nil, fmt.Errorf("sqs DeleteMessageBatch: %d entries, at most %d", len(handles), MaxBatchEntries)
	}
	in := &sqs.DeleteMessageBatchInput{QueueUrl: &q.url, Entries: make([]types.DeleteMessageBatchRequestEntry, len(handles))}
	for i, h := range handles {
		in.Entries[i] = types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(h)}
	}
	out, err := q.api.DeleteMessageBatch(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("sqs DeleteMessageBatch: %w", err)
	}
	return batchErrors(out.Failed), nil
}

// ChangeVisibility hides the message for d more (0 makes it visible now).
func (q *Queue) ChangeVisibility(ctx context.Context, receiptHandle string, d time.Duration) error {
	_, err := q.api.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl: &q.url, ReceiptHandle: &receiptHandle, VisibilityTimeout: int32(d / time.Second),
	})
	if err != nil {
		return fmt.Errorf("sqs ChangeMessageVisibility: %w", err)
	}
	return nil
}

// ChangeVisibilityBatch sets the visibility of up to ten messages to d.
// Entries SQS refused come back in failed, with their index in the input
// as ID.
func (q *Queue) ChangeVisibilityBatch(ctx context.Context, receiptHandles []string, d time.Duration) (failed []EntryError, err error) {
	if len(receiptHandles) == 0 {
		return nil, nil
	}
	if len(receiptHandles) > MaxBatchEntries {
		return nil, fmt.Errorf("sqs ChangeMessageVisibilityBatch: %d entries, at most %d", len(receiptHandles), MaxBatchEntries)
	}
	in := &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: &q.url, Entries: make([]types.ChangeMessageVisibilityBatchRequestEntry, len(receiptHandles))}
	for i, h := range receiptHandles {
		in.Entries[i] = types.ChangeMessageVisibilityBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(h), VisibilityTimeout: int32(d / time.Second)}
	}
	out, err := q.api.ChangeMessageVisibilityBatch(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("sqs ChangeMessageVisibilityBatch: %w", err)
	}
	return batchErrors(out.Failed), nil
}

// Depth is the queue's approximate message counts: visible (waiting to be
// received), delayed, and in flight (received and not deleted, including
// those waiting out a retry delay).
type Depth struct {
	Visible, Delayed, InFlight int
}

// Waiting is the number of messages not in flight.
func (d Depth) Waiting() int { return d.Visible + d.Delayed }

// Depth reads the queue's approximate counts. SQS updates them within
// about a minute.
func (q *Queue) Depth(ctx context.Context) (Depth, error) {
	out, err := q.api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: &q.url, AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages,
			types.QueueAttributeNameApproximateNumberOfMessagesDelayed, types.QueueAttributeNameApproximateNumberOfMessagesNotVisible},
	})
	if err != nil {
		return Depth{}, fmt.Errorf("sqs GetQueueAttributes %s: %w", q.url, err)
	}
	var d Depth
	for name, into := range map[types.QueueAttributeName]*int{
		types.QueueAttributeNameApproximateNumberOfMessages:           &d.Visible,
		types.QueueAttributeNameApproximateNumberOfMessagesDelayed:    &d.Delayed,
		types.QueueAttributeNameApproximateNumberOfMessagesNotVisible: &d.InFlight,
	} {
		n, err := strconv.Atoi(out.Attributes[string(name)])
		if err != nil {
			return Depth{}, fmt.Errorf("sqs GetQueueAttributes %s: %s is %q", q.url, name, out.Attributes[string(name)])
		}
		*into = n
	}
	return d, nil
}

// Retention reads how long the queue keeps a message (MessageRetentionPeriod).
func (q *Queue) Retention(ctx context.Context) (time.Duration, error) {
	out, err := q.api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: &q.url, AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameMessageRetentionPeriod},
	})
	if err != nil {
		return 0, fmt.Errorf("sqs GetQueueAttributes %s: %w", q.url, err)
	}
	raw := out.Attributes[string(types.QueueAttributeNameMessageRetentionPeriod)]
	secs, err := strconv.Atoi(raw)
	if err != nil || secs <= 0 {
		return 0, fmt.Errorf("sqs GetQueueAttributes %s: MessageRetentionPeriod is %q", q.url, raw)
	}
	return time.Duration(secs) * time.Second, nil
}

// RedrivePolicy is the queue's dead-letter configuration.
type RedrivePolicy struct {
	DeadLetterTargetARN string
	MaxReceiveCount     int
}

// ErrNoRedrivePolicy means the queue has no dead-letter queue configured.
var ErrNoRedrivePolicy = errors.New("queue has no RedrivePolicy")

// Redrive reads the queue's RedrivePolicy. maxReceiveCount may be written
// as a number or a string; both are accepted.
func (q *Queue) Redrive(ctx context.Context) (RedrivePolicy, error) {
	out, err := q.api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: &q.url, AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameRedrivePolicy},
	})
	if err != nil {
		return RedrivePolicy{}, fmt.Errorf("sqs GetQueueAttributes %s: %w", q.url, err)
	}
	raw := out.Attributes[string(types.QueueAttributeNameRedrivePolicy)]
	if raw == "" {
		return RedrivePolicy{}, fmt.Errorf("%s: %w", q.url, ErrNoRedrivePolicy)
	}
	return ParseRedrivePolicy(raw)
}

// ParseRedrivePolicy parses a RedrivePolicy attribute.
func ParseRedrivePolicy(raw string) (RedrivePolicy, error) {
	var p struct {
		DeadLetterTargetARN string          `json:"deadLetterTargetArn"`
		MaxReceiveCount     json.RawMessage `json:"maxReceiveCount"`
	}
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		return RedrivePolicy{}, fmt.Errorf("RedrivePolicy %q: %w", raw, err)
	}
	s := string(p.MaxReceiveCount)
	if uq, err := strconv.Unquote(s); err == nil {
		s = uq
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return RedrivePolicy{}, fmt.Errorf("RedrivePolicy %q: maxReceiveCount is not a positive integer", raw)
	}
	return RedrivePolicy{DeadLetterTargetARN: p.DeadLetterTargetARN, MaxReceiveCount: n}, nil
}

// IsQueueMissing reports whether err says the queue does not exist. SQS
// answers with the modelled QueueDoesNotExist or, on the older protocol
// (and some emulators), the code AWS.SimpleQueueService.NonExistentQueue.
func IsQueueMissing(err error) bool {
	var qdne *types.QueueDoesNotExist
	if errors.As(err, &qdne) {
		return true
	}
	var ae smithy.APIError
	return errors.As(err, &ae) && (ae.ErrorCode() == "AWS.SimpleQueueService.NonExistentQueue" || ae.ErrorCode() == "QueueDoesNotExist")
}

func batchErrors(entries []types.BatchResultErrorEntry) []EntryError {
	out := make([]EntryError, 0, len(entries))
	for _, f := range entries {
		out = append(out, EntryError{ID: aws.ToString(f.Id), Code: aws.ToString(f.Code), Message: aws.ToString(f.Message), SenderFault: f.SenderFault})
	}
	return out
}
