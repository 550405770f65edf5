// Package clock lets code that reads the time or waits for it run on a
// clock its tests drive: production code takes a Clock (nil meaning Real),
// and a test hands it a Fake that it advances step by step, so that a
// schedule is checked exactly and no test sleeps.
package clock

import (
	"context"
	"sync"
	"time"
)

// Clock tells the time and makes timers and tickers.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once, d from now (at once when
	// d <= 0).
	NewTimer(d time.Duration) Timer
	// NewTicker returns a ticker that fires every d (d > 0), dropping
	// ticks that its reader is too slow for, as time.Ticker does.
	NewTicker(d time.Duration) Ticker
}

// Timer is a time.Timer.
type Timer interface {
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it did.
	Stop() bool
}

// Ticker is a time.Ticker.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Real is the system's clock.
var Real Clock = realClock{}

// OrReal returns c, or Real when c is nil: a nil Clock field means the
// system's clock.
func OrReal(c Clock) Clock {
	if c == nil {
		return Real
	}
	return c
}

type realClock struct{}

func (realClock) Now() time.Time                   { return time.Now() }
func (realClock) NewTimer(d time.Duration) Timer   { return realTimer{time.NewTimer(d)} }
func (realClock) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time { return r.t.C }
func (r realTimer) Stop() bool          { return r.t.Stop() }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }

// AfterFunc calls f in its own goroutine once d has passed on c, unless
// the returned timer is stopped first (Stop then reports true).
func AfterFunc(c Clock, d time.Duration, f func()) Timer {
	if _, real := c.(realClock); real || c == nil {
		return realFuncTimer{time.AfterFunc(d, f)}
	}
	t := c.NewTimer(d)
	stopped := make(chan struct{})
	go func() {
		select {
		case <-t.C():
			f()
		case <-stopped:
		}
	}()
	return &funcTimer{t: t, stopped: stopped}
}

// funcTimer is AfterFunc's timer on a clock other than Real.
type funcTimer struct {
	t       Timer
	stopped chan struct{}
	once    sync.Once
}

func (ft *funcTimer) C() <-chan time.Time { return nil }

func (ft *funcTimer) Stop() bool {
	if !ft.t.Stop() {
		return false // it fired: f runs
	}
	ft.once.Do(func() { close(ft.stopped) })
	return true
}

type realFuncTimer struct{ t *time.Timer }

func (r realFuncTimer) C() <-chan time.Time { return nil }
func (r realFuncTimer) Stop() bool          { return r.t.Stop() }

// Sleep waits for d on c, or until ctx ends (its error then).
func Sleep(ctx context.Context, c Clock, d time.Duration) error {
	t := OrReal(c).NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}
