package retry

import (
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Schedule is an exponential backoff without an end, for a loop that keeps
// trying (Do's Policy gives up after MaxElapsed): its steps are Initial,
// then each twice the last, at most Max (the first one included). Jitter,
// if set, draws each delay at random within ±Jitter of its step (0.5:
// between half and one and a half times the step); without it, every delay
// is its step exactly.
type Schedule struct {
	Initial, Max time.Duration
	Jitter       float64
}

// BackOff returns the schedule as a backoff.ExponentialBackOff: each
// NextBackOff is the next delay, and Reset starts again from the first. It
// never returns backoff.Stop. Like any ExponentialBackOff it is not safe
// for concurrent use.
func (s Schedule) BackOff() *backoff.ExponentialBackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(min(s.Initial, s.Max)),
		backoff.WithMultiplier(2),
		backoff.WithMaxInterval(s.Max),
		backoff.WithRandomizationFactor(s.Jitter),
		backoff.WithMaxElapsedTime(0),
	)
}

// Nth returns the n-th delay of the schedule (n below 1 counts as 1), for
// a caller that counts its attempts itself (a message's receive count, a
// job's failed writes).
func (s Schedule) Nth(n int) time.Duration {
	b := s.BackOff()
	// Step to the n-th step without jitter; once a step reaches Max (or
	// stays at zero) every later one is the same.
	b.RandomizationFactor = 0
	for i := 1; i < n; i++ {
		if d := b.NextBackOff(); d >= s.Max || d <= 0 {
			break
		}
	}
	b.RandomizationFactor = s.Jitter
	return b.NextBackOff()
}
