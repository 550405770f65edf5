package budget

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/shared/fleet"
)

// recorder sees every share of its limits as it applies (onShare, under
// the limit's lock, so in the order the limits' rates change) and keeps
// the largest sum of them at any moment.
type recorder struct {
	mu     sync.Mutex
	shares map[*Limit]float64
	events int
	max    float64
	at     map[*Limit]float64 // the shares at the largest sum
}

func newRecorder() *recorder { return &recorder{shares: map[*Limit]float64{}} }

// watch records the member's share changes; before it runs.
func (r *recorder) watch(ms ...*member) {
	for _, m := range ms {
		l := m.limit
		l.onShare = func(share float64) { r.apply(l, share) }
	}
}

func (r *recorder) apply(l *Limit, share float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events++
	r.shares[l] = share
	sum := 0.0
	for _, v := range r.shares {
		sum += v
	}
	if sum > r.max {
		r.max = sum
		r.at = map[*Limit]float64{}
		for k, v := range r.shares {
			r.at[k] = v
		}
	}
}

// check fails the test if the shares ever added up to more than budget.
func (r *recorder) check(t *testing.T, budget float64) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.max > budget+1e-9 {
		var at []string
		for l, v := range r.at {
			at = append(at, fmt.Sprintf("%p: %.2f", l, v))
		}
		t.Fatalf("the shares added up to %.2f (%v), over the budget of %g", r.max, at, budget)
	}
	t.Logf("%d share changes, largest sum %.2f", r.events, r.max)
}

var errLost = errors.New("simulated: the answer was lost after the commit")

// loseAnswers makes the member's syncs lose their answers (after the
// statement committed) while the returned flag is set.
func loseAnswers(m *member) *atomic.Bool {
	var lose atomic.Bool
	m.fleet.afterQuery = func() error {
		if lose.Load() {
			return errLost
		}
		return nil
	}
	return &lose
}

func syncOK(t *testing.T, ms ...*member) {
	t.Helper()
	for _, m := range ms {
		if err := m.fleet.Sync(context.Background()); err != nil {
			t.Fatalf("sync of %s: %v", m.fleet.id, err)
		}
	}
}

// A worker's sync that says it is idle commits, but its answer is lost
// (the connection reset after the commit): the other takes the whole rate
// at its next sync. The first gave its share back before it said so, and,
// when it has work again, it waits for the other to lower its share.
func TestALostAnswerOfAnIdleSyncNeverTakesTheFleetOverItsBudget(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	a := newMember(t, pool, "a", 40, 0, time.Hour)
	b := newMember(t, pool, "b", 40, 0, time.Hour)
	rec := newRecorder()
	rec.watch(a, b)
	workA := a.busy()
	b.busy()
	lose := loseAnswers(a)
	syncOK(t, a, b, a, a, b) // b waits until a applied a share that counts it, and said so
	waitShares(t, 20, a, b)

	workA.Store(false)
	lose.Store(true)
	if err := a.fleet.Sync(context.Background()); !errors.Is(err, errLost) {
		t.Fatalf("a's sync: %v, want the lost answer", err)
	}
	lose.Store(false)
	syncOK(t, b) // b sees a idle
	waitShares(t, 40, b)
	workA.Store(true)
	syncOK(t, a) // busy again: a waits for b
	waitShares(t, 0, a)
	syncOK(t, b, b, a)
	waitShares(t, 20, a, b)

	// The answer of a's idle sync comes late: b syncs meanwhile.
	workA.Store(false)
	a.fleet.afterQuery = func() error {
		a.fleet.afterQuery = nil
		syncOK(t, b)
		waitShares(t, 40, b)
		return nil
	}
	syncOK(t, a)
	waitShares(t, 0, a)
	rec.check(t, 40)
}

// A busy worker's sync that lowers its share (another is busy again)
// commits, but its answer is lost: the database says it synced, so the
// other takes its share. The first holds nothing until a sync succeeds.
func TestALostAnswerOfALoweringSyncNeverTakesTheFleetOverItsBudget(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	a := newMember(t, pool, "a", 40, 0, time.Hour)
	b := newMember(t, pool, "b", 40, 0, time.Hour)
	rec := newRecorder()
	rec.watch(a, b)
	a.busy()
	workB := b.busy()
	lose := loseAnswers(a)
	syncOK(t, a, b, a, a, b) // b waits until a applied a share that counts it, and said so
	workB.Store(false)
	syncOK(t, b, a)
	waitShares(t, 40, a)
	waitShares(t, 0, b)

	workB.Store(true)
	syncOK(t, b) // busy again: withheld until a syncs
	lose.Store(true)
	if err := a.fleet.Sync(context.Background()); !errors.Is(err, errLost) {
		t.Fatalf("a's sync: %v, want the lost answer", err)
	}
	lose.Store(false)
	waitShares(t, 0, a) // it may have lowered its share: it holds none
	if !a.fleet.unsure {
		t.Fatal("a does not retry soon after a lost answer")
	}
	syncOK(t, b) // a has not said that it applied a share that counts b
	waitShares(t, 0, b)
	syncOK(t, a, a, b)
	waitShares(t, 20, a, b)
	if a.fleet.unsure {
		t.Fatal("a still unsure after a sync succeeded")
	}

	// Again, and the answer of a's lowering sync comes late: b syncs
	// between its commit and its answer, and waits.
	workB.Store(false)
	syncOK(t, b, a)
	waitShares(t, 40, a)
	workB.Store(true)
	syncOK(t, b)
	a.fleet.afterQuery = func() error {
		a.fleet.afterQuery = nil
		syncOK(t, b)
		return nil
	}
	syncOK(t, a)
	waitShares(t, 20, a)
	waitShares(t, 0, b)
	syncOK(t, a, b)
	waitShares(t, 20, a, b)
	rec.check(t, 40)
}

// A worker whose syncs fail before they are sent (no connection) keeps its
// shares until a sync succeeds, but not longer than the others count it:
// it drops them before its last sync's seen_at leaves the liveness window.
func TestAWorkerWhoseSyncsFailHoldsItsShareNoLongerThanTheOthersCountIt(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	m := newMember(t, pool, "m", 30, 0, 100*time.Millisecond)
	m.fleet.live = 600 * time.Millisecond
	m.busy()
	var fail atomic.Bool
	m.fleet.beforeQuery = func() error {
		if fail.Load() {
			return notSent{}
		}
		return nil
	}
	var droppedAt atomic.Pointer[time.Time]
	m.limit.onShare = func(share float64) {
		if share == 0 && fail.Load() {
			now := time.Now()
			droppedAt.CompareAndSwap(nil, &now)
		}
	}
	m.run()
	waitShares(t, 30, m)
	fail.Store(true)
	var seen time.Time
	if err := pool.QueryRow(context.Background(), `SELECT seen_at FROM bulk_import_budget_share WHERE worker_id = 'm'`).Scan(&seen); err != nil {
		t.Fatal(err)
	}
	waitShares(t, 0, m)
	at := droppedAt.Load()
	if at == nil {
		t.Fatal("no drop recorded")
	}
	if !at.Before(seen.Add(m.fleet.live)) {
		t.Fatalf("dropped its share at %v, after the others stopped counting it (its last seen_at %v + %v)", at, seen, m.fleet.live)
	}
	if m.fleet.unsure {
		t.Fatal("syncs that were never sent made the worker unsure")
	}
	fail.Store(false)
	waitShares(t, 30, m)
}

// notSent is an error of a statement never sent (pgconn.SafeToRetry).
type notSent struct{}

func (notSent) Error() string     { return "simulated: could not connect" }
func (notSent) SafeToRetry() bool { return true }

// A sync held up in the database (a lock) takes at most an interval: the
// worker gives its shares up (the sync may commit later) and syncs again
// soon; when the lock goes it takes its share again.
func TestASyncHeldUpGivesUpAfterAnInterval(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	m := newMember(t, pool, "m", 30, 0, 200*time.Millisecond)
	m.busy()
	m.run()
	waitShares(t, 30, m)
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT 1 FROM bulk_import_budget FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	waitShares(t, 0, m)
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitShares(t, 30, m)
}

// A live worker (it beats in the fleet's registry) whose budget syncs
// stopped holds up a worker busy again only until its last sync is older
// than the liveness window: then the others count it no more (and it
// holds no share).
func TestALiveWorkerWhoseSyncsStoppedHoldsUpTheOthersOnlyForTheLivenessWindow(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	a := newMember(t, pool, "a", 30, 0, 100*time.Millisecond)
	work := a.busy()
	a.run()
	waitShares(t, 30, a)
	ctx := context.Background()
	// stuck beats, and its last sync (active) is three seconds short of
	// the liveness window old.
	if _, err := pool.Exec(ctx, fleet.BeatSQL, "stuck"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO bulk_import_budget_share (name, worker_id, accepted, cap, budget, active, seen_at)
		VALUES ($1, 'stuck', 0, 0, 30, true, now() - $2 * interval '1 second')`, CognitoCreate, (a.fleet.live - 3*time.Second).Seconds()); err != nil {
		t.Fatal(err)
	}
	work.Store(false)
	waitShares(t, 0, a) // stuck counts: it has work, a not
	work.Store(true)
	waitShares(t, 30, a) // stuck has not synced since: a waits, until stuck no longer counts
}

// A request that waits while its worker holds no share asks for a sync at
// once (the worker has work: it takes its share then, not at its next
// periodic sync).
func TestARequestWaitingForNoShareAsksForASync(t *testing.T) {
	t.Parallel()
	l := New(CognitoCreate, 30, 0)
	defer l.Close()
	kicked := make(chan struct{}, 1)
	l.kick = func() { kicked <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Wait(ctx) }()
	select {
	case <-kicked:
	case <-time.After(5 * time.Second):
		t.Fatal("a request waiting with no share asked for no sync")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("wait: %v", err)
	}
	// With a share, a request does not ask.
	l.setShare(1000, State{})
	if err := l.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-kicked:
		t.Fatal("a request with a share asked for a sync")
	default:
	}
}

// A worker that goes idle tells the others, which take its share at once,
// not at their next periodic sync (here twenty seconds away; a's syncs
// on notifications are two seconds apart at least).
func TestAWorkerGoingIdleTellsTheOthers(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	a := newMember(t, pool, "a", 30, 0, 20*time.Second)
	a.busy()
	a.run()
	waitShares(t, 30, a)
	waitListening(t, pool)
	b := newMember(t, pool, "b", 30, 0, 20*time.Second)
	work := b.busy()
	// b joins (by hand): a lowers its share at b's notification, then b
	// takes its own.
	syncOK(t, b)
	waitShares(t, 15, a)
	eventually(t, func() bool { syncOK(t, b); return b.limit.State().Share == 15 }, func() string { return "b's share" })
	work.Store(false)
	syncOK(t, b)
	waitShares(t, 0, b)
	waitShares(t, 30, a)
}
