package queue_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/shared/clock"
	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/queue"
)

// visibility is a fake queue that records visibility changes. Extensions
// report their handles on started, then wait until gate is closed.
type visibility struct {
	clk     *clock.Fake
	gate    chan struct{}
	started chan []string

	mu       sync.Mutex
	last     map[string]time.Duration // handle -> the visibility last set
	extended map[time.Time][]string   // the handles extended, by the clock's time then
	released []string                 // the handles made visible, in order
	inFlight map[string]bool          // handles being extended
	undone   []string                 // handles released while being extended
}

func newVisibility(clk *clock.Fake) *visibility {
	return &visibility{clk: clk, gate: make(chan struct{}), started: make(chan []string, 64),
		last: map[string]time.Duration{}, extended: map[time.Time][]string{}, inFlight: map[string]bool{}}
}

func (v *visibility) ChangeVisibilityBatch(ctx context.Context, handles []string, d time.Duration) ([]queue.EntryError, error) {
	v.mu.Lock()
	if d == 0 {
		defer v.mu.Unlock()
		for _, h := range handles {
			if v.inFlight[h] {
				v.undone = append(v.undone, h)
			}
			v.last[h] = 0
		}
		v.released = append(v.released, handles...)
		return nil, nil
	}
	for _, h := range handles {
		v.inFlight[h] = true
	}
	v.mu.Unlock()
	v.started <- slices.Clone(handles)
	select {
	case <-v.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.clk.Now()
	for _, h := range handles {
		delete(v.inFlight, h)
		v.last[h] = d
	}
	v.extended[now] = append(v.extended[now], handles...)
	return nil, nil
}

// handles returns "h"+key for each key.
func handles(keys ...string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = "h" + k
	}
	return out
}

// sorted returns a sorted copy of s.
func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestLeasesExtendOncePerIntervalUntilEndedAndNeverHideAReleasedMessage(t *testing.T) {
	t.Parallel()
	const interval = 30 * time.Second
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	clk := clock.NewFake(t0)
	v := newVisibility(clk)
	l := queue.NewLeases(v, time.Minute, interval, logging.Discard())
	l.Clock = clk
	renewed := make(chan int, 64)
	l.OnExtend = func(n int) { renewed <- n }
	var keys []string // a .. y
	for i := range 25 {
		keys = append(keys, string(rune('a'+i)))
	}
	for _, k := range keys {
		l.Hold(k, "h"+k)
	}
	// The test's deadline: nothing below waits on the real clock but this
	// and the short wait for a wrong End.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { defer close(ran); l.Run(runCtx) }()
	defer func() { stop(); <-ran }()
	if err := clk.BlockUntil(ctx, 1); err != nil {
		t.Fatal("Run has no ticker: ", err)
	}

	// waitRenewed waits until the extensions of one tick have renewed as
	// many leases as want has, and checks that they are want's: each lease
	// held and due, once.
	waitRenewed := func(tick int, want []string) {
		t.Helper()
		got := 0
		for got < len(want) {
			select {
			case n := <-renewed:
				got += n
			case <-ctx.Done():
				t.Fatalf("tick %d: %d leases renewed, want %d", tick, got, len(want))
			}
		}
		v.mu.Lock()
		ext := sorted(v.extended[clk.Now()])
		v.mu.Unlock()
		if got != len(want) || !slices.Equal(ext, sorted(want)) {
			t.Fatalf("tick %d at +%s renewed %d: %v, want %v", tick, clk.Now().Sub(t0), got, ext, sorted(want))
		}
	}

	// Tick 1: every lease is due, in batches of at most ten, held at the
	// gate.
	clk.Advance(interval)
	var inFlight []string
	for len(inFlight) < 25 {
		select {
		case hs := <-v.started:
			if len(hs) > queue.MaxBatchEntries {
				t.Fatalf("a batch of %d", len(hs))
			}
			inFlight = append(inFlight, hs...)
		case <-ctx.Done():
			t.Fatalf("%d leases being extended, want 25", len(inFlight))
		}
	}
	// An extension of "a" is in flight: ending its lease waits for it,
	// so that the release after End is the last word.
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		if h, ok := l.End("a"); !ok || h != "ha" {
			t.Errorf("End: %q %v", h, ok)
		}
		if _, err := v.ChangeVisibilityBatch(ctx, []string{"ha"}, 0); err != nil {
			t.Error(err)
		}
	}()
	// A correct End passes whatever this wait; a wrong one returns in it.
	select {
	case <-ended:
		t.Fatal("End returned while an extension of the lease was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(v.gate)
	select {
	case <-ended:
	case <-ctx.Done():
		t.Fatal("End did not return once the extension was answered")
	}
	waitRenewed(1, handles(keys...))
	v.mu.Lock()
	last, undone := v.last["ha"], slices.Clone(v.undone)
	v.mu.Unlock()
	if last != 0 || len(undone) != 0 {
		t.Fatalf("a released message was hidden again: visibility %s, released in flight %v", last, undone)
	}
	if l.Len() != 24 {
		t.Fatalf("%d held", l.Len())
	}

	// Less than half an interval before tick 2, "b" is received again
	// (a new handle) and "z" for the first time: neither is due at tick 2,
	// both are at 3.
	clk.Advance(interval/2 + time.Second)
	l.Hold("b", "hb2")
	l.Hold("z", "hz")
	clk.Advance(interval/2 - time.Second)
	waitRenewed(2, handles(keys[2:]...))
	clk.Advance(interval)
	waitRenewed(3, append(handles(keys[2:]...), "hb2", "hz"))

	// After Run, ReleaseAll makes every held message visible at once.
	stop()
	<-ran
	v.mu.Lock()
	v.released = nil
	v.mu.Unlock()
	l.ReleaseAll(ctx)
	want := append(handles(keys[2:]...), "hb2", "hz")
	v.mu.Lock()
	defer v.mu.Unlock()
	if got := sorted(v.released); !slices.Equal(got, sorted(want)) {
		t.Fatalf("released %v, want %v", got, sorted(want))
	}
	for _, h := range want {
		if v.last[h] != 0 {
			t.Errorf("%s still hidden for %s", h, v.last[h])
		}
	}
	if l.Len() != 0 {
		t.Fatalf("%d still held", l.Len())
	}
}
