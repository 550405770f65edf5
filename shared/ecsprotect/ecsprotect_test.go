package ecsprotect

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/shared/logging"
)

// agent is a fake ECS agent recording protection changes.
type agent struct {
	mu      sync.Mutex
	changes []bool
}

func (a *agent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ProtectionEnabled bool
		ExpiresInMinutes  int
	}
	if r.Method != http.MethodPut || r.URL.Path != "/task-protection/v1/state" || json.NewDecoder(r.Body).Decode(&body) != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if body.ProtectionEnabled && body.ExpiresInMinutes < 1 {
		http.Error(w, "no expiry", http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	a.changes = append(a.changes, body.ProtectionEnabled)
	a.mu.Unlock()
	_, _ = w.Write([]byte(`{"protection":{"ProtectionEnabled":true}}`))
}

func TestProtectedWhileBusyAndReleasedWhenIdleOrStopping(t *testing.T) {
	t.Parallel()
	a := &agent{}
	srv := httptest.NewServer(a)
	defer srv.Close()
	env := map[string]string{"ECS_AGENT_URI": srv.URL}
	p := FromEnv(func(k string) string { return env[k] }, 10*time.Minute, logging.Discard())
	if p == nil {
		t.Fatal("no protector on ECS")
	}
	var busy atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Watch(ctx, 10*time.Millisecond, busy.Load); close(done) }()
	busy.Store(true)
	time.Sleep(100 * time.Millisecond)
	busy.Store(false)
	time.Sleep(100 * time.Millisecond)
	busy.Store(true)
	time.Sleep(100 * time.Millisecond)
	cancel()
	<-done
	a.mu.Lock()
	defer a.mu.Unlock()
	want := []bool{true, false, true, false}
	if len(a.changes) != len(want) {
		t.Fatalf("changes %v, want %v", a.changes, want)
	}
	for i := range want {
		if a.changes[i] != want[i] {
			t.Fatalf("changes %v, want %v", a.changes, want)
		}
	}
}

func TestOutsideECSThereIsNoProtector(t *testing.T) {
	t.Parallel()
	if FromEnv(func(string) string { return "" }, time.Minute, logging.Discard()) != nil {
		t.Fatal("protector without ECS_AGENT_URI")
	}
}
