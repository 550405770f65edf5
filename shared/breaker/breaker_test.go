package breaker_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/shared/breaker"
	"github.com/massgov/bulk-user-import/shared/logging"
)

func TestABreakerOpensOnceProbesWithBackoffAndClosesWhenTheProbeSucceeds(t *testing.T) {
	t.Parallel()
	var probes atomic.Int64
	var healthy atomic.Bool
	var probeTimes []time.Time
	var mu sync.Mutex
	b := breaker.New(breaker.Fineos, func(context.Context) error {
		probes.Add(1)
		mu.Lock()
		probeTimes = append(probeTimes, time.Now())
		mu.Unlock()
		if healthy.Load() {
			return nil
		}
		return errors.New("401")
	}, logging.Discard())
	b.ProbeInitial, b.ProbeMax = 50*time.Millisecond, 200*time.Millisecond
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
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go set.Run(ctx)

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
	if f := set.Paused()[breaker.Fineos]; f.Fix == "" || f.Since.IsZero() {
		t.Fatalf("paused %+v", set.Paused())
	}
	if d := b.RetryIn(); d < time.Second || d > breaker.MaxRetryIn {
		t.Fatalf("RetryIn %s", d)
	}
	time.Sleep(700 * time.Millisecond)
	// 50, 100, 200, 200 ms apart: about four probes in 700 ms, not one per row.
	if n := probes.Load(); n < 3 || n > 6 {
		t.Fatalf("%d probes in 700 ms", n)
	}
	mu.Lock()
	for i := 2; i < len(probeTimes); i++ {
		if gap := probeTimes[i].Sub(probeTimes[i-1]); gap < 90*time.Millisecond {
			t.Errorf("probe %d came %s after the one before: no backoff", i, gap)
		}
	}
	mu.Unlock()
	healthy.Store(true)
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
	defer wcancel()
	if err := set.WaitClosed(wctx, breaker.Fineos); err != nil {
		t.Fatal("not closed after the dependency recovered")
	}
	if b.Open() || b.RetryIn() != 0 {
		t.Fatal("still open")
	}
	mu.Lock()
	if len(changes) != 2 || !changes[0] || changes[1] {
		t.Fatalf("changes %v", changes)
	}
	mu.Unlock()
	// It opens again on a new fault.
	b.Trip("FINEOS_AUTH_FAILED", "again", "fix")
	if !b.Open() {
		t.Fatal("did not reopen")
	}
}

func TestANilSetPausesNothing(t *testing.T) {
	t.Parallel()
	var s *breaker.Set
	if s.Blocking(breaker.Database) != nil || len(s.Paused()) != 0 || s.WaitClosed(context.Background(), breaker.Database) != nil {
		t.Fatal("a nil set paused something")
	}
}
