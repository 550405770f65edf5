// Package clocktest has a clock for tests that moves only when told to.
package clocktest

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/massgov/bulk-user-import/shared/clock"
)

// Fake is a clock.Clock that stands still until Advance moves it; timers
// that come due fire during Advance, in order.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	seq     int
	waiters []*waiter
}

var _ clock.Clock = (*Fake)(nil)

type waiter struct {
	at      time.Time
	seq     int
	ch      chan time.Time // After
	fn      func()         // AfterFunc
	stopped bool
}

// New returns a fake clock at start (a fixed date when zero).
func New(start time.Time) *Fake {
	if start.IsZero() {
		start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	return &Fake{now: start}
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// After returns a channel that receives once the clock has moved by d.
func (f *Fake) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	f.add(&waiter{ch: ch}, d)
	return ch
}

// AfterFunc calls fn, in its own goroutine, once the clock has moved by d.
func (f *Fake) AfterFunc(d time.Duration, fn func()) clock.Timer {
	w := &waiter{fn: fn}
	f.add(w, d)
	return &timer{f: f, w: w}
}

func (f *Fake) add(w *waiter, d time.Duration) {
	f.mu.Lock()
	w.at, w.seq = f.now.Add(d), f.seq
	f.seq++
	if d <= 0 {
		f.mu.Unlock()
		f.fire(w, w.at)
		return
	}
	f.waiters = append(f.waiters, w)
	f.mu.Unlock()
}

type timer struct {
	f *Fake
	w *waiter
}

func (t *timer) Stop() bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	for i, w := range t.f.waiters {
		if w == t.w {
			t.f.waiters = append(t.f.waiters[:i], t.f.waiters[i+1:]...)
			w.stopped = true
			return true
		}
	}
	return false
}

// Advance moves the clock by d, firing every timer that comes due, the
// earliest first (the clock reads each one's time as it fires).
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	end := f.now.Add(d)
	f.mu.Unlock()
	for {
		f.mu.Lock()
		sort.Slice(f.waiters, func(i, j int) bool {
			a, b := f.waiters[i], f.waiters[j]
			return a.at.Before(b.at) || a.at.Equal(b.at) && a.seq < b.seq
		})
		if len(f.waiters) == 0 || f.waiters[0].at.After(end) {
			f.now = end
			f.mu.Unlock()
			return
		}
		w := f.waiters[0]
		f.waiters = f.waiters[1:]
		if w.at.After(f.now) {
			f.now = w.at
		}
		at := f.now
		f.mu.Unlock()
		f.fire(w, at)
	}
}

func (f *Fake) fire(w *waiter, at time.Time) {
	if w.ch != nil {
		w.ch <- at
		return
	}
	go w.fn()
}

// Waiters is the number of pending timers.
func (f *Fake) Waiters() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waiters)
}

// WaitForWaiters polls (never sleeping on the fake clock) until at least n
// timers are pending, so that a test advances the clock only once the code
// under test waits on it. It returns ctx's error if ctx ends first.
func (f *Fake) WaitForWaiters(ctx context.Context, n int) error {
	for f.Waiters() < n {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}
