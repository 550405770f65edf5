package ecsprotect

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/shared/clock"
	"github.com/massgov/bulk-user-import/shared/logging"
)

// agent is a fake ECS agent recording protection changes, each with the
// time of the tick of Watch that made it.
type agent struct {
	mu      sync.Mutex
	tick    time.Duration // since t0
	changes []change
}

type change struct {
	Tick    time.Duration // since t0
	Protect bool
}

// ticked notes that Watch handles the tick at (since t0).
func (a *agent) ticked(at time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tick = at
}

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func (a *agent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ProtectionEnabled bool
		ExpiresInMinutes  int
	}
	if r.Method != http.MethodPut || r.URL.Path != "/task-protection/v1/state" || json.NewDecoder(r.Body).Decode(&body) != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if body.ProtectionEnabled && body.ExpiresInMinutes != 10 {
		http.Error(w, "expiry not the protector's", http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	a.changes = append(a.changes, change{a.tick, body.ProtectionEnabled})
	a.mu.Unlock()
	_, _ = w.Write([]byte(`{"protection":{"ProtectionEnabled":true}}`))
}

func TestProtectedWhileBusyRenewedBeforeTheExpiryAndReleasedWhenIdleOrStopping(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	a := &agent{}
	srv := httptest.NewServer(a)
	defer srv.Close()
	env := map[string]string{"ECS_AGENT_URI": srv.URL}
	p := FromEnv(func(k string) string { return env[k] }, 10*time.Minute, logging.Discard())
	if p == nil {
		t.Fatal("no protector on ECS")
	}
	p.Clock = clk
	// The test's deadline: nothing below waits on the real clock but this.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	watchCtx, stop := context.WithCancel(ctx)
	// busy() waits for the test's answer: Watch asks once per tick, once
	// it has handled the one before.
	answers := make(chan bool)
	busy := func() bool {
		a.ticked(clk.Now().Sub(t0))
		select {
		case b := <-answers:
			return b
		case <-watchCtx.Done():
			return false
		}
	}
	done := make(chan struct{})
	go func() { defer close(done); p.Watch(watchCtx, time.Minute, busy) }()
	defer func() { stop(); <-done }()
	if err := clk.BlockUntil(ctx, 1); err != nil {
		t.Fatal("Watch has no ticker: ", err)
	}
	// A tick a minute: the task is busy for 13 minutes, idle for 2, busy.
	steps := slices.Concat(slices.Repeat([]bool{true}, 13), []bool{false, false, true})
	for i, isBusy := range steps {
		clk.Advance(time.Minute)
		select {
		case answers <- isBusy:
		case <-ctx.Done():
			t.Fatalf("tick %d: Watch did not ask whether the task is busy", i+1)
		}
	}
	// Stopping unprotects the task.
	stop()
	<-done
	a.mu.Lock()
	got := slices.Clone(a.changes)
	a.mu.Unlock()
	want := []change{
		{time.Minute, true},       // busy: protected for 10 minutes
		{7 * time.Minute, true},   // more than 5 minutes later: renewed
		{13 * time.Minute, true},  // and again
		{14 * time.Minute, false}, // idle: unprotected
		{16 * time.Minute, true},  // busy again
		{16 * time.Minute, false}, // stopping
	}
	if !slices.Equal(got, want) {
		t.Fatalf("changes %v, want %v", got, want)
	}
}

func TestOutsideECSThereIsNoProtector(t *testing.T) {
	t.Parallel()
	if FromEnv(func(string) string { return "" }, time.Minute, logging.Discard()) != nil {
		t.Fatal("protector without ECS_AGENT_URI")
	}
}
