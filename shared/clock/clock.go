// Package clock is the time source of the code that waits, expires and
// schedules: production uses Real; tests pass a clocktest.Fake and move it
// by hand, so that no test depends on a sleep being long enough.
package clock

import "time"

// Clock tells the time and wakes callers up later.
type Clock interface {
	Now() time.Time
	// After sends the time on the channel once d has passed.
	After(d time.Duration) <-chan time.Time
	// AfterFunc calls f in its own goroutine once d has passed, unless the
	// returned timer is stopped first.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc.
type Timer interface {
	// Stop prevents the call and reports whether it did (false: the call
	// already happened or was stopped).
	Stop() bool
}

// Real is the system clock.
var Real Clock = realClock{}

type realClock struct{}

func (realClock) Now() time.Time                            { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time    { return time.After(d) }
func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Or returns c, or Real when c is nil: a zero field means the system clock.
func Or(c Clock) Clock {
	if c == nil {
		return Real
	}
	return c
}
