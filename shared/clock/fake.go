package clock

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Fake is a clock for tests: it stands still until Advance moves it, and
// its timers and tickers fire during Advance, in the order of their
// deadlines. A test waits for the code under test to arm a timer with
// BlockUntil. It is safe for concurrent use.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	pending []*fakeTimer
	changed chan struct{} // closed (and replaced) when pending changes
}

// NewFake returns a fake clock that reads now.
func NewFake(now time.Time) *Fake {
	return &Fake{now: now, changed: make(chan struct{})}
}

// fakeTimer is a Fake's timer (period 0) or ticker.
type fakeTimer struct {
	f      *Fake
	c      chan time.Time
	at     time.Time
	period time.Duration
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTimer returns a timer that fires when the clock has been advanced by
// d, or at once when d <= 0.
func (f *Fake) NewTimer(d time.Duration) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{f: f, c: make(chan time.Time, 1), at: f.now.Add(d)}
	if d <= 0 {
		t.c <- f.now
		return t
	}
	f.add(t)
	return t
}

// NewTicker returns a ticker that fires every d of fake time. It panics
// when d <= 0, as time.NewTicker does.
func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive interval for NewTicker")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{f: f, c: make(chan time.Time, 1), at: f.now.Add(d), period: d}
	f.add(t)
	return fakeTicker{t}
}

// Advance moves the clock forward by d, firing every timer and ticker due
// by then. A tick its reader has not taken yet is not doubled: as with
// time.Ticker, the later one is dropped.
func (f *Fake) Advance(d time.Duration) {
	if d < 0 {
		panic("clock: Advance by a negative duration")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	end := f.now.Add(d)
	for {
		var next *fakeTimer
		for _, t := range f.pending {
			if !t.at.After(end) && (next == nil || t.at.Before(next.at)) {
				next = t
			}
		}
		if next == nil {
			break
		}
		f.now = next.at
		select {
		case next.c <- f.now:
		default:
		}
		if next.period > 0 {
			next.at = next.at.Add(next.period)
		} else {
			f.remove(next)
		}
	}
	f.now = end
}

// Pending is the number of timers and tickers that have not fired (timers)
// or not been stopped.
func (f *Fake) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pending)
}

// BlockUntil waits until at least n timers and tickers are pending, or ctx
// ends. A test calls it before Advance, to know that the code under test
// waits on the clock.
func (f *Fake) BlockUntil(ctx context.Context, n int) error {
	for {
		f.mu.Lock()
		got, changed := len(f.pending), f.changed
		f.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("clock: waiting for %d pending timers, %d pending: %w", n, got, ctx.Err())
		case <-changed:
		}
	}
}

// add and remove change the pending timers; f.mu is held.
func (f *Fake) add(t *fakeTimer) {
	f.pending = append(f.pending, t)
	f.notify()
}

func (f *Fake) remove(t *fakeTimer) bool {
	for i, p := range f.pending {
		if p == t {
			f.pending = append(f.pending[:i], f.pending[i+1:]...)
			f.notify()
			return true
		}
	}
	return false
}

func (f *Fake) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

// Stop removes the timer; for a timer, it reports whether it had not fired.
func (t *fakeTimer) Stop() bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	return t.f.remove(t)
}

// fakeTicker is a ticker's face of a fakeTimer.
type fakeTicker struct{ *fakeTimer }

func (t fakeTicker) Stop() { t.fakeTimer.Stop() }
