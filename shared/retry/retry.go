// Package retry retries a call while its errors are transient, with an
// exponential, jittered backoff (cenkalti/backoff) that never runs past the
// caller's deadline. Which errors are transient is the caller's classifier
// (register.Classify in this project): this package only paces. Schedule
// gives the same backoff to loops that pace themselves (a message's retry
// delay, a breaker's probes, a reconnect).
package retry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Policy is the schedule of retries within one attempt at a message.
type Policy struct {
	Initial    time.Duration // first wait (default 200 ms)
	Max        time.Duration // longest wait (default 5 s)
	MaxElapsed time.Duration // give up after this long in all (default 30 s)
	// Margin is kept free before the context's deadline, so that a caller
	// has time to record the failure (default 2 s).
	Margin time.Duration
}

// DefaultPolicy is the schedule used unless configured otherwise.
var DefaultPolicy = Policy{Initial: 200 * time.Millisecond, Max: 5 * time.Second, MaxElapsed: 30 * time.Second, Margin: 2 * time.Second}

func (p Policy) withDefaults() Policy {
	d := DefaultPolicy
	if p.Initial > 0 {
		d.Initial = p.Initial
	}
	if p.Max > 0 {
		d.Max = p.Max
	}
	if p.MaxElapsed != 0 {
		d.MaxElapsed = p.MaxElapsed
	}
	if p.Margin > 0 {
		d.Margin = p.Margin
	}
	return d
}

// Do calls fn until it succeeds, returns an error that transient reports
// false for, the schedule's time is up, or ctx ends. It returns fn's last
// error (never a backoff wrapper); when ctx ended while it waited to try
// again, the context's error wrapping that last error, so that callers
// tell a stop from a failure. notify, if set, hears of each retry.
// A policy with a negative MaxElapsed makes one call only.
func Do(ctx context.Context, p Policy, transient func(error) bool, fn func() error, notify func(err error, wait time.Duration)) error {
	p = p.withDefaults()
	if p.MaxElapsed < 0 {
		return fn()
	}
	elapsed := p.MaxElapsed
	if dl, ok := ctx.Deadline(); ok {
		elapsed = min(elapsed, time.Until(dl)-p.Margin)
	}
	if elapsed <= 0 {
		return fn()
	}
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(p.Initial),
		backoff.WithMaxInterval(p.Max),
		backoff.WithMaxElapsedTime(elapsed),
		backoff.WithRandomizationFactor(0.5),
	)
	var last error
	err := backoff.RetryNotify(func() error {
		last = fn()
		if last != nil && !transient(last) {
			return backoff.Permanent(last)
		}
		return last
	}, backoff.WithContext(b, ctx), func(err error, wait time.Duration) {
		if notify != nil {
			notify(err, wait)
		}
	})
	if err == nil {
		return nil
	}
	if last != nil && ctx.Err() != nil && !IsContextError(last) {
		// Stopped while waiting to try again: the caller was told to stop,
		// which is what the error says first; the last failure stays in it.
		return fmt.Errorf("%w (while retrying: %w)", ctx.Err(), last)
	}
	if last != nil {
		return last
	}
	return err
}

// IsContextError reports whether err comes from a cancelled or expired
// context, which no retry can fix.
func IsContextError(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
