package budget

import (
	"testing"
	"time"
)

func TestTheListenerReconnectsAfter1sDoublingTo30sAndFromTheStartOnceItListened(t *testing.T) {
	t.Parallel()
	waits := reconnectRetry.BackOff()
	const s = time.Second
	for i, want := range []time.Duration{s, 2 * s, 4 * s, 8 * s, 16 * s, 30 * s, 30 * s, 30 * s} {
		if got := waits.NextBackOff(); got != want {
			t.Fatalf("wait %d: %s, want %s", i+1, got, want)
		}
	}
	waits.Reset() // a connection listened
	if got := waits.NextBackOff(); got != s {
		t.Fatalf("after listening: %s, want 1s", got)
	}
}
