package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

var (
	errTransient = errors.New("transient")
	errPermanent = errors.New("permanent")
)

func isTransient(err error) bool { return errors.Is(err, errTransient) }

var fast = Policy{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxElapsed: time.Second, Margin: time.Millisecond}

func TestRetriesTransientErrorsUntilSuccess(t *testing.T) {
	t.Parallel()
	calls, notified := 0, 0
	err := Do(context.Background(), fast, isTransient, func() error {
		calls++
		if calls < 4 {
			return errTransient
		}
		return nil
	}, func(error, time.Duration) { notified++ })
	if err != nil || calls != 4 || notified != 3 {
		t.Fatalf("err %v, %d calls, %d notifications", err, calls, notified)
	}
}

func TestStopsAtAPermanentError(t *testing.T) {
	t.Parallel()
	calls := 0
	err := Do(context.Background(), fast, isTransient, func() error {
		calls++
		if calls == 2 {
			return errPermanent
		}
		return errTransient
	}, nil)
	if !errors.Is(err, errPermanent) || calls != 2 {
		t.Fatalf("err %v after %d calls", err, calls)
	}
}

func TestGivesUpWithTheLastErrorWhenTimeRunsOut(t *testing.T) {
	t.Parallel()
	p := fast
	p.MaxElapsed = 30 * time.Millisecond
	start := time.Now()
	err := Do(context.Background(), p, isTransient, func() error { return errTransient }, nil)
	if !errors.Is(err, errTransient) {
		t.Fatalf("err %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("took %s", took)
	}
}

func TestNeverRunsPastTheDeadline(t *testing.T) {
	t.Parallel()
	p := Policy{Initial: 10 * time.Millisecond, Max: 10 * time.Millisecond, MaxElapsed: time.Hour, Margin: 50 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := Do(ctx, p, isTransient, func() error { return errTransient }, nil)
	if !errors.Is(err, errTransient) {
		t.Fatalf("err %v", err)
	}
	if took := time.Since(start); took > 190*time.Millisecond {
		t.Fatalf("ran %s, into the margin before the deadline", took)
	}
}

func TestNegativeMaxElapsedCallsOnce(t *testing.T) {
	t.Parallel()
	calls := 0
	_ = Do(context.Background(), Policy{MaxElapsed: -1}, isTransient, func() error { calls++; return errTransient }, nil)
	if calls != 1 {
		t.Fatalf("%d calls", calls)
	}
}

// Stopped while waiting to retry: the error says so, and keeps the last
// failure.
func TestAStopWhileWaitingIsAContextError(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	boom := errors.New("boom")
	calls := 0
	err := Do(ctx, Policy{Initial: time.Second, Max: time.Second, MaxElapsed: time.Minute}, func(error) bool { return true },
		func() error {
			calls++
			cancel()
			return boom
		}, nil)
	if !IsContextError(err) || !errors.Is(err, boom) || calls != 1 {
		t.Fatalf("err = %v after %d calls; want the stop wrapping boom", err, calls)
	}
}
