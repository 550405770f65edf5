package clock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/shared/clock"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// fired returns what ch holds, without waiting.
func fired(ch <-chan time.Time) (time.Time, bool) {
	select {
	case at := <-ch:
		return at, true
	default:
		return time.Time{}, false
	}
}

func TestAFakeTimerFiresOnceWhenTheClockReachesItsDeadline(t *testing.T) {
	t.Parallel()
	f := clock.NewFake(t0)
	tm := f.NewTimer(2 * time.Second)
	if f.Pending() != 1 {
		t.Fatalf("%d pending", f.Pending())
	}
	f.Advance(time.Second)
	if _, ok := fired(tm.C()); ok {
		t.Fatal("fired a second early")
	}
	f.Advance(time.Second)
	if at, ok := fired(tm.C()); !ok || !at.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("fired %v at %s", ok, at)
	}
	if f.Pending() != 0 || tm.Stop() {
		t.Fatal("a fired timer is still pending")
	}
	f.Advance(time.Hour)
	if _, ok := fired(tm.C()); ok || !f.Now().Equal(t0.Add(time.Hour+2*time.Second)) {
		t.Fatalf("fired twice, or now %s", f.Now())
	}
}

func TestAFakeTimerDueAlreadyFiresAtOnceAndAStoppedOneNever(t *testing.T) {
	t.Parallel()
	f := clock.NewFake(t0)
	if at, ok := fired(f.NewTimer(0).C()); !ok || !at.Equal(t0) {
		t.Fatalf("a timer due now: %v %s", ok, at)
	}
	tm := f.NewTimer(time.Second)
	if !tm.Stop() || f.Pending() != 0 {
		t.Fatal("Stop")
	}
	f.Advance(time.Minute)
	if _, ok := fired(tm.C()); ok {
		t.Fatal("a stopped timer fired")
	}
}

func TestAFakeTickerTicksEveryPeriodAndDropsTicksNotTaken(t *testing.T) {
	t.Parallel()
	f := clock.NewFake(t0)
	tk := f.NewTicker(10 * time.Second)
	for i := 1; i <= 3; i++ {
		f.Advance(10 * time.Second)
		if at, ok := fired(tk.C()); !ok || !at.Equal(t0.Add(time.Duration(i)*10*time.Second)) {
			t.Fatalf("tick %d: %v %s", i, ok, at)
		}
	}
	// Three periods at once, none taken: one tick waits, the first.
	f.Advance(30 * time.Second)
	if at, ok := fired(tk.C()); !ok || !at.Equal(t0.Add(40*time.Second)) {
		t.Fatalf("%v %s", ok, at)
	}
	if _, ok := fired(tk.C()); ok {
		t.Fatal("ticks piled up")
	}
	tk.Stop()
	f.Advance(time.Minute)
	if _, ok := fired(tk.C()); ok || f.Pending() != 0 {
		t.Fatal("a stopped ticker ticked")
	}
}

func TestBlockUntilWaitsForTheCodeUnderTestToArmATimer(t *testing.T) {
	t.Parallel()
	f := clock.NewFake(t0)
	done := make(chan time.Time)
	go func() { done <- <-f.NewTimer(time.Minute).C() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.BlockUntil(ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.Advance(time.Minute)
	if at := <-done; !at.Equal(t0.Add(time.Minute)) {
		t.Fatalf("fired at %s", at)
	}
	short, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := f.BlockUntil(short, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("BlockUntil with nothing pending: %v", err)
	}
}

func TestOrRealMeansTheSystemClockForNil(t *testing.T) {
	t.Parallel()
	f := clock.NewFake(t0)
	if clock.OrReal(f) != clock.Clock(f) || clock.OrReal(nil) != clock.Real {
		t.Fatal("OrReal")
	}
	before := time.Now()
	if now := clock.Real.Now(); now.Before(before) {
		t.Fatalf("Real.Now %s before %s", now, before)
	}
	if _, ok := <-clock.Real.NewTimer(0).C(); !ok {
		t.Fatal("a real timer due now did not fire")
	}
	tk := clock.Real.NewTicker(time.Hour)
	tk.Stop()
}

func TestAfterFuncRunsOnceDueUnlessStoppedFirst(t *testing.T) {
	t.Parallel()
	f := clock.NewFake(t0)
	ran := make(chan struct{}, 2)
	clock.AfterFunc(f, time.Minute, func() { ran <- struct{}{} })
	stopped := clock.AfterFunc(f, time.Minute, func() { ran <- struct{}{} })
	if !stopped.Stop() {
		t.Fatal("Stop before the deadline did not prevent the call")
	}
	f.Advance(59 * time.Second)
	select {
	case <-ran:
		t.Fatal("called before its deadline")
	default:
	}
	f.Advance(time.Second)
	<-ran // the first, in its own goroutine
	if f.Pending() != 0 {
		t.Fatalf("%d timers pending", f.Pending())
	}
	// On the real clock too.
	real := make(chan struct{})
	clock.AfterFunc(nil, 0, func() { close(real) })
	<-real
}

func TestSleepWaitsForTheClockOrTheContext(t *testing.T) {
	t.Parallel()
	f := clock.NewFake(t0)
	done := make(chan error, 1)
	go func() { done <- clock.Sleep(context.Background(), f, time.Hour) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.BlockUntil(ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.Advance(time.Hour)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	stop, cancelStop := context.WithCancel(context.Background())
	cancelStop()
	if err := clock.Sleep(stop, f, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep with an ended context: %v", err)
	}
	if f.Pending() != 0 {
		t.Fatalf("%d timers left pending", f.Pending())
	}
}
