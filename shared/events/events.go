// Package events describes a job's completion as an event (schema v1) and
// publishes it to an SNS topic and/or an EventBridge bus. The event carries
// counts, codes, times and result file locations: never personal data
// (emails, FEINs, names). Delivery is at least once: consumers dedupe by
// EventID, "<job>/<completion>".
package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/massgov/bulk-user-import/shared/mask"
)

// Version is the schema version of the events published.
const Version = 1

// Event types.
const (
	TypeCompleted = "bulk-user-import.job.completed"
	TypeCancelled = "bulk-user-import.job.cancelled"
)

// Job states in an event.
const (
	StateCompleted = "completed"
	StateCancelled = "cancelled"
)

// MaxReasonLen bounds the cancel reason carried (in characters).
const MaxReasonLen = 200

// Event is a job's completion, as published (JSON).
type Event struct {
	Version    int    `json:"version"`
	EventID    string `json:"event_id"`
	Type       string `json:"type"`
	Job        string `json:"job"`
	Completion int    `json:"completion"`
	State      string `json:"state"`
	// Counts are the job's rows by outcome.
	Counts Counts `json:"counts"`
	// FailuresByCode counts failed, rejected and cancelled rows by code.
	FailuresByCode map[string]int64 `json:"failures_by_code"`
	Results        Results          `json:"results"`
	CreatedAt      time.Time        `json:"created_at"`
	StartedAt      *time.Time       `json:"started_at,omitempty"`
	FinishedAt     *time.Time       `json:"finished_at,omitempty"`
	// CancelReason is masked and at most MaxReasonLen characters.
	CancelReason string `json:"cancel_reason,omitempty"`
}

// Counts are a job's rows by outcome.
type Counts struct {
	Total     int64 `json:"total"`
	Succeeded int64 `json:"succeeded"`
	Failed    int64 `json:"failed"`
	Rejected  int64 `json:"rejected"`
	Duplicate int64 `json:"duplicate"`
	Cancelled int64 `json:"cancelled"`
}

// Results says where the result files are, and their state: written,
// not_written (no bucket), failed (the writes kept failing; the event was
// not held back longer), or pending.
type Results struct {
	State string   `json:"state"`
	Files []string `json:"files,omitempty"`
}

// ID is the event id of a job's completion.
func ID(job string, completion int) string { return job + "/" + strconv.Itoa(completion) }

// TypeOf returns the event type and state of a completion, cancelled or not.
func TypeOf(cancelled bool) (typ, state string) {
	if cancelled {
		return TypeCancelled, StateCancelled
	}
	return TypeCompleted, StateCompleted
}

// Reason masks a cancel reason and bounds it to MaxReasonLen characters.
func Reason(s string) string {
	s = mask.Text(s)
	if utf8.RuneCountInString(s) <= MaxReasonLen {
		return s
	}
	r := []rune(s)
	return string(r[:MaxReasonLen-1]) + "…"
}

// Marshal encodes the event.
func (e Event) Marshal() ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.EventID, err)
	}
	return b, nil
}

// Publisher publishes events.
type Publisher interface {
	// Publish sends the event; an error is transient unless IsPermanent.
	Publish(ctx context.Context, e Event) error
	// Destination names where events go, for logs.
	Destination() string
}

// Multi publishes to every publisher in turn; it fails if any does.
// PublishTo lets a retry skip the destinations that have the event already.
type Multi []Publisher

// Publish sends e to each publisher.
func (m Multi) Publish(ctx context.Context, e Event) error {
	_, err := m.PublishTo(ctx, e, nil)
	return err
}

// PublishTo sends e to each publisher whose Destination is not in done;
// it returns the destinations that have the event now (done and those
// that accepted it) and the failures joined.
func (m Multi) PublishTo(ctx context.Context, e Event, done []string) ([]string, error) {
	delivered := append([]string(nil), done...)
	var errs []error
	for _, p := range m {
		if slices.Contains(done, p.Destination()) {
			continue
		}
		if err := p.Publish(ctx, e); err != nil {
			errs = append(errs, err)
			continue
		}
		delivered = append(delivered, p.Destination())
	}
	return delivered, errors.Join(errs...)
}

// Destination names every destination.
func (m Multi) Destination() string {
	var d []string
	for _, p := range m {
		d = append(d, p.Destination())
	}
	return strings.Join(d, ", ")
}

// PermanentError is a failure that retrying will not cure (a topic or bus
// that does not exist, missing permissions, a rejected parameter): it is
// retried at the longest backoff, and shown.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// IsPermanent reports whether err (or any error it joins) is permanent.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}
