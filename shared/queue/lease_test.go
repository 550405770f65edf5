package queue_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/queue"
)

// slowVisibility records visibility changes; extensions take a while.
type slowVisibility struct {
	mu      sync.Mutex
	last    map[string]time.Duration // handle -> the visibility last set
	calls   atomic.Int64
	delay   time.Duration
	started chan struct{}
}

func (s *slowVisibility) ChangeVisibilityBatch(ctx context.Context, handles []string, d time.Duration) ([]queue.EntryError, error) {
	s.calls.Add(1)
	if d > 0 && s.started != nil {
		select {
		case s.started <- struct{}{}:
		default:
		}
	}
	if d > 0 {
		time.Sleep(s.delay)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range handles {
		s.last[h] = d
	}
	return nil, nil
}

func TestLeasesExtendUntilEndedAndNeverHideAReleasedMessage(t *testing.T) {
	t.Parallel()
	v := &slowVisibility{last: map[string]time.Duration{}, delay: 200 * time.Millisecond, started: make(chan struct{}, 1)}
	l := queue.NewLeases(v, time.Minute, 50*time.Millisecond, logging.Discard())
	var extended atomic.Int64
	l.OnExtend = func(n int) { extended.Add(int64(n)) }
	for i := range 25 {
		l.Hold(string(rune('a'+i)), "h"+string(rune('a'+i)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	// An extension of "a" is in flight: ending its lease waits for it, so
	// a release after End is the last word.
	<-v.started
	if h, ok := l.End("a"); !ok || h != "ha" {
		t.Fatalf("End: %q %v", h, ok)
	}
	if _, err := v.ChangeVisibilityBatch(ctx, []string{"ha"}, 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	v.mu.Lock()
	if v.last["ha"] != 0 {
		t.Fatalf("a released message was hidden again: visibility %s", v.last["ha"])
	}
	v.mu.Unlock()
	if extended.Load() < 24 || l.Len() != 24 {
		t.Fatalf("%d extensions, %d held", extended.Load(), l.Len())
	}
	// A message received again is held under its new handle.
	l.Hold("b", "hb2")
	cancel()
	<-done
	l.ReleaseAll(context.Background())
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, h := range []string{"hb2", "hc", "hy"} {
		if d, ok := v.last[h]; !ok || d != 0 {
			t.Errorf("%s not released: %v %v", h, d, ok)
		}
	}
	if l.Len() != 0 {
		t.Fatalf("%d still held", l.Len())
	}
}
