package budget

import (
	"context"
	"testing"
	"time"
)

// b's syncs fail before they are sent (no connection) for longer than the
// liveness window: its shares expire (timer), and a stops counting it and
// takes the whole rate. When b's syncs succeed again it rejoins: it takes
// no share until a has applied a sync that counts it (it once took its
// share at once while a still held the whole rate: 60 of 40).
func TestAWorkerBackAfterTheLivenessWindowRejoins(t *testing.T) {
	pool := newPool(t)
	a := newMember(t, pool, "a", 40, 0, 100*time.Millisecond)
	b := newMember(t, pool, "b", 40, 0, 100*time.Millisecond)
	a.fleet.live, b.fleet.live = time.Second, time.Second
	rec := newRecorder()
	rec.watch(a, b)
	a.busy()
	b.busy()
	syncOK(t, a, b, a, a, b)
	waitShares(t, 20, a, b)
	var fail bool
	b.fleet.beforeQuery = func() error {
		if fail {
			return notSent{}
		}
		return nil
	}
	fail = true
	_ = b.fleet.Sync(context.Background()) // not sent: b keeps its share
	waitShares(t, 0, b)                    // its hold expires (live - interval)
	time.Sleep(1100 * time.Millisecond)    // b's seen_at leaves a's window (a second, by the database's clock, plus a margin)
	syncOK(t, a)
	waitShares(t, 40, a)
	fail = false
	syncOK(t, b) // back: rejoins, holding nothing while a holds 40
	t.Logf("a %.1f, b %.1f", a.limit.State().Share, b.limit.State().Share)
	rec.check(t, 40)
	syncOK(t, a, b, a, b)
	waitShares(t, 20, a, b)
	rec.check(t, 40)
}

// b's syncs commit but their answers are lost, again and again (b holds
// nothing: unsure). Its seen_at stays fresh and its applied_at never
// moved: a, busy again, once waited for it without end. Holding nothing,
// b's seen_at stands in for what it applied.
func TestPersistentLostAnswersDoNotStarveAWorkerBusyAgain(t *testing.T) {
	pool := newPool(t)
	a := newMember(t, pool, "a", 40, 0, 100*time.Millisecond)
	b := newMember(t, pool, "b", 40, 0, 100*time.Millisecond)
	a.fleet.live, b.fleet.live = time.Second, time.Second
	workA := a.busy()
	b.busy()
	syncOK(t, a, b, a, a, b)
	waitShares(t, 20, a, b)
	workA.Store(false)
	syncOK(t, a, b)
	waitShares(t, 40, b)
	lose := loseAnswers(b)
	lose.Store(true)
	workA.Store(true)
	deadline := time.Now().Add(3 * a.fleet.live)
	for time.Now().Before(deadline) {
		syncOK(t, a)
		_ = b.fleet.Sync(context.Background())
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("a %.1f, b %.1f", a.limit.State().Share, b.limit.State().Share)
	if a.limit.State().Share == 0 {
		t.Fatalf("a held at 0 for 3 liveness windows while b (holding nothing) loses its answers")
	}
}
