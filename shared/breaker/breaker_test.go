package breaker_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/shared/breaker"
	"github.com/massgov/bulk-user-import/shared/clock"
	"github.com/massgov/bulk-user-import/shared/logging"
)

func TestABreakerOpensOnceProbesWithBackoffAndClosesWhenTheProbeSucceeds(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	clk := clock.NewFake(t0)
	// Each probe hands the test the time it was made at.
	probed := make(chan time.Time)
	var healthy atomic.Bool
	b := breaker.New(breaker.Fineos, func(ctx context.Context) error {
		select {
		case probed <- clk.Now():
		case <-ctx.Done():
			return ctx.Err()
		}
		if healthy.Load() {
			return nil
		}
		return errors.New("401")
	}, logging.Discard())
	b.Clock = clk
	var mu sync.Mutex
	var changes []bool
	b.OnChange = func(d breaker.Dependency, open bool, f breaker.Fault) {
		mu.Lock()
		defer mu.Unlock()
		changes = append(changes, open)
		if d != breaker.Fineos || f.Code != "FINEOS_AUTH_FAILED" {
			t.Errorf("change %s %+v", d, f)
		}
	}
	set := breaker.NewSet(b)
	// The test's deadline: nothing below waits on the real clock but this.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { defer close(ran); set.Run(runCtx) }()
	defer func() { stop(); <-ran }()

	// probe waits for the breaker to arm its timer for the probe due at
	// at, moves the clock there, and checks that the probe is made then.
	probe := func(n int, at time.Time) {
		t.Helper()
		if err := clk.BlockUntil(ctx, 1); err != nil {
			t.Fatalf("probe %d: the breaker does not wait for it: %v", n, err)
		}
		if open, _, next := b.State(); !open || !next.Equal(at) {
			t.Fatalf("probe %d: open %v, due at +%s, want +%s", n, open, next.Sub(t0), at.Sub(t0))
		}
		clk.Advance(at.Sub(clk.Now()))
		select {
		case got := <-probed:
			if !got.Equal(at) {
				t.Fatalf("probe %d made at +%s, want +%s", n, got.Sub(t0), at.Sub(t0))
			}
		case <-ctx.Done():
			t.Fatalf("probe %d not made when due", n)
		}
	}

	if set.Blocking(breaker.Fineos, breaker.Cognito) != nil {
		t.Fatal("a new breaker is open")
	}
	// Many rows trip it at once: it opens once.
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() { b.Trip("FINEOS_AUTH_FAILED", "token refused", "check FINEOS_CLIENT_OAUTH2_CLIENT_SECRET") })
	}
	wg.Wait()
	if set.Blocking(breaker.Cognito, breaker.Fineos) != b || set.Blocking(breaker.Cognito) != nil {
		t.Fatal("Blocking")
	}
	if f := set.Paused()[breaker.Fineos]; f.Fix == "" || !f.Since.Equal(t0) {
		t.Fatalf("paused %+v", set.Paused())
	}
	// Work waits until a second or two after the first probe.
	if d := b.RetryIn(); d < breaker.DefaultProbeInitial+time.Second || d >= breaker.DefaultProbeInitial+2*time.Second {
		t.Fatalf("RetryIn %s", d)
	}
	// One probe at a time, ProbeInitial after the opening, then twice as
	// late each time, up to ProbeMax: not one per row.
	at := t0
	for i, gap := range []time.Duration{2, 4, 8, 16, 30, 30} {
		at = at.Add(gap * time.Second)
		probe(i+1, at)
	}
	if err := clk.BlockUntil(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if d := b.RetryIn(); d != breaker.MaxRetryIn {
		t.Fatalf("RetryIn %s with the next probe %s away", d, breaker.DefaultProbeMax)
	}
	// The dependency recovers: the next probe closes the breaker.
	healthy.Store(true)
	at = at.Add(breaker.DefaultProbeMax)
	probe(7, at)
	if err := set.WaitClosed(ctx, breaker.Fineos); err != nil {
		t.Fatal("not closed after the dependency recovered")
	}
	if b.Open() || b.RetryIn() != 0 || clk.Pending() != 0 {
		t.Fatalf("still open, or probing: %d timers", clk.Pending())
	}
	mu.Lock()
	got := slices.Clone(changes)
	mu.Unlock()
	if len(got) != 2 || !got[0] || got[1] {
		t.Fatalf("changes %v", got)
	}
	// It opens again on a new fault, and probes from ProbeInitial again.
	clk.Advance(time.Hour)
	healthy.Store(false)
	b.Trip("FINEOS_AUTH_FAILED", "again", "fix")
	if !b.Open() {
		t.Fatal("did not reopen")
	}
	probe(8, clk.Now().Add(breaker.DefaultProbeInitial))
}

func TestANilSetPausesNothing(t *testing.T) {
	t.Parallel()
	var s *breaker.Set
	if s.Blocking(breaker.Database) != nil || len(s.Paused()) != 0 || s.WaitClosed(context.Background(), breaker.Database) != nil {
		t.Fatal("a nil set paused something")
	}
}
