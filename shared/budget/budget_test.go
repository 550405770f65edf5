package budget

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/logging"
)

func newPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := jobs.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

func near(got, want, tolerance float64) bool { return math.Abs(got-want) <= tolerance }

func TestNoBudgetNoCapMeansNoPacing(t *testing.T) {
	t.Parallel()
	var l *Limit = New(CognitoGet, 0, 0)
	if l != nil {
		t.Fatal("a limit without budget or cap")
	}
	for range 1000 {
		if err := l.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	l.Throttled()
	l.Close()
}

func TestACapPacesEvenlyAndANewRateAppliesToTheNextToken(t *testing.T) {
	t.Parallel()
	l := New(CognitoCreate, 0, 40)
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	n := 0
	for l.Wait(ctx) == nil {
		n++
	}
	// 40/s for half a second: about 20 (the first token at once).
	if n < 10 || n > 22 {
		t.Fatalf("%d tokens in 500ms at 40/s", n)
	}
	if err := l.Wait(ctx); err == nil {
		t.Fatal("a wait with an ended context got a token")
	}

	// From one token a second to a thousand: the next token does not wait
	// out the old second.
	l.setShare(1, State{})
	_ = l.Wait(context.Background())
	l.setShare(1000, State{})
	start := time.Now()
	if err := l.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 300*time.Millisecond {
		t.Fatalf("the next token took %v after the rate went up", took)
	}
}

// A limit with a budget is closed until its fleet's first sync.
func TestABudgetedLimitWaitsForTheFleet(t *testing.T) {
	t.Parallel()
	l := New(CognitoCreate, 30, 0)
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := l.Wait(ctx); err == nil {
		t.Fatal("a token before any sync")
	}
	f := NewFleet(newPool(t), "w1", 100*time.Millisecond, logging.Discard(), l)
	if err := f.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := l.State(); st.Share != 30 || st.Workers != 1 || st.Budget != 30 || st.Rate != 30 {
		t.Fatalf("alone: %+v", st)
	}
	if err := l.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// member is a worker's fleet with one budgeted limit.
type member struct {
	limit *Limit
	fleet *Fleet
	stop  context.CancelFunc
	done  chan struct{}
}

func join(t *testing.T, pool *pgxpool.Pool, id string, budget, cap float64) *member {
	t.Helper()
	return joinEvery(t, pool, id, budget, cap, 100*time.Millisecond)
}

func joinEvery(t *testing.T, pool *pgxpool.Pool, id string, budget, cap float64, interval time.Duration) *member {
	t.Helper()
	m := newMember(t, pool, id, budget, cap, interval)
	m.run()
	return m
}

// newMember is a worker's fleet that does not run yet.
func newMember(t *testing.T, pool *pgxpool.Pool, id string, budget, cap float64, interval time.Duration) *member {
	t.Helper()
	l := New(CognitoCreate, budget, cap)
	m := &member{limit: l, fleet: NewFleet(pool, id, interval, logging.Discard(), l), stop: func() {}, done: make(chan struct{})}
	close(m.done)
	t.Cleanup(func() { m.leave(); l.Close() })
	return m
}

// run runs the member's fleet until it leaves.
func (m *member) run() {
	ctx, cancel := context.WithCancel(context.Background())
	m.stop, m.done = cancel, make(chan struct{})
	go func() { defer close(m.done); m.fleet.Run(ctx) }()
}

func (m *member) leave() {
	m.stop()
	<-m.done
}

// eventually polls until done holds; after 5 s it fails the test,
// saying why.
func eventually(t *testing.T, done func() bool, why func() string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !done(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5 s: %s", why())
		}
	}
}

// waitShares waits until every member's share is want (±0.01).
func waitShares(t *testing.T, want float64, ms ...*member) {
	t.Helper()
	eventually(t, func() bool {
		for _, m := range ms {
			if !near(m.limit.State().Share, want, 0.01) {
				return false
			}
		}
		return true
	}, func() string {
		msg := fmt.Sprintf("every share %.2f", want)
		for _, m := range ms {
			msg += fmt.Sprintf("; %s: %+v", m.fleet.id, m.limit.State())
		}
		return msg
	})
}

// waitListening waits until a session of the test's database has run
// LISTEN on the fleet's channel (and is idle: it listens).
func waitListening(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	eventually(t, func() bool {
		var n int
		err := pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND state = 'idle' AND query = 'LISTEN ' || $1`, Channel).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n > 0
	}, func() string { return "no session listens on " + Channel })
}

func TestTheLiveWorkersShareTheBudgetAndRebalanceWhenOneJoinsOrLeaves(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	a, b, c := join(t, pool, "a", 30, 0), join(t, pool, "b", 30, 0), join(t, pool, "c", 30, 0)
	waitShares(t, 10, a, b, c)

	// One leaves: the two others take half each within a sync or two.
	c.leave()
	waitShares(t, 15, a, b)

	// One joins: it takes nothing until the others have lowered theirs.
	// Its first sync is made here, so that its shares are checked as that
	// sync set them (not before, nor after a later sync).
	d := newMember(t, pool, "d", 30, 0, 100*time.Millisecond)
	if err := d.fleet.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := d.limit.State(); st.Workers != 3 || st.Share != 0 {
		t.Fatalf("the joiner's first sync: %+v, want 3 workers and no share", st)
	}
	d.run()
	waitShares(t, 10, a, b, d)

	// A worker capped below an even split takes its cap; the others split
	// the rest.
	e := join(t, pool, "e", 30, 3)
	waitShares(t, 3, e)
	waitShares(t, 9, a, b, d)
}

func TestFairShare(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		rate float64
		caps []float64
		want float64
	}{
		{30, []float64{0, 0, 0}, 10},
		{30, []float64{0, 0, 0, 3}, 9},
		{30, []float64{0, 20, 0}, 10},          // a cap above the split changes nothing
		{30, []float64{1, 2, 0}, 27},           // two capped low, one takes the rest
		{30, []float64{15, 15, 15}, 10},        // every cap above the split
		{30, []float64{1, 2, 3}, 24},           // every worker capped below: each takes its cap
		{40, []float64{8, 8, 0, 0}, 12},        // 40 - 16 = 24 for two
		{40, []float64{12, 8, 0, 0}, 32.0 / 3}, // 8 taken, 32 for three: the cap of 12 does not bind
	} {
		if got := fairShare(c.rate, c.caps); !near(got, c.want, 0.01) {
			t.Errorf("fairShare(%v, %v) = %.2f, want %.2f", c.rate, c.caps, got, c.want)
		}
	}
}

// Joins and leaves are notified: the others rebalance at once, not at
// their next periodic sync (here ten seconds away).
func TestJoinsAndLeavesAreNotified(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	a := joinEvery(t, pool, "a", 30, 0, 10*time.Second)
	waitShares(t, 30, a)
	waitListening(t, pool)
	start := time.Now()
	b := joinEvery(t, pool, "b", 30, 0, 10*time.Second)
	waitShares(t, 15, a, b)
	b.leave()
	waitShares(t, 30, a)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("rebalancing took %v: not notified", took)
	}
}

// A worker that dies without leaving stops counting once its heartbeat in
// the fleet's registry is older than the liveness window, however
// recently its share row says it synced; a live one counts.
func TestADeadWorkersShareIsReturned(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	ctx := context.Background()
	a := join(t, pool, "a", 20, 0)
	waitShares(t, 20, a) // joined
	// A dead worker's share (it synced a moment before it died) and a live
	// worker's, whose registry heartbeat is fresh.
	if _, err := pool.Exec(ctx, `INSERT INTO bulk_import_worker (worker_id, heartbeat_at) VALUES ('dead', now() - $1 * interval '1 second' - interval '1 second'), ('alive', now())`,
		LiveWindow(100*time.Millisecond).Seconds()); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO bulk_import_budget_share (name, worker_id, seen_at) VALUES ($1, 'dead', now()), ($1, 'alive', now())`, CognitoCreate); err != nil {
		t.Fatal(err)
	}
	waitShares(t, 10, a)
	if st, err := Read(ctx, pool, 10*time.Second); err != nil || len(st) != 1 || st[0].Workers != 2 {
		t.Fatalf("read: %+v, %v: want a and the live worker", st, err)
	}
	// The live one dies too.
	if _, err := pool.Exec(ctx, `UPDATE bulk_import_worker SET heartbeat_at = now() - interval '1 minute' WHERE worker_id = 'alive'`); err != nil {
		t.Fatal(err)
	}
	waitShares(t, 20, a)
}

// throttle records accepted attempts over a full window, and throttles.
func throttle(l *Limit, accepted, throttled int) {
	l.started = time.Now().Add(-2 * window)
	for range accepted {
		l.calls.Add(1)
		l.note(false)
	}
	for range throttled {
		l.calls.Add(1)
		l.note(false)
		l.Throttled()
	}
}

func fleetRate(t *testing.T, pool *pgxpool.Pool) float64 {
	t.Helper()
	var r float64
	if err := pool.QueryRow(context.Background(), `SELECT rate FROM bulk_import_budget WHERE name = $1`, CognitoCreate).Scan(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestThrottlingLowersTheFleetRateOncePerCooldownAndItClimbsBack(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	ctx := context.Background()
	syncNow := func(f *Fleet) {
		t.Helper()
		if err := f.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	set := func(sql string) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	l := New(CognitoCreate, 100, 0)
	defer l.Close()
	f := NewFleet(pool, "w", time.Second, logging.Discard(), l)
	syncNow(f)
	if r := fleetRate(t, pool); r != 100 {
		t.Fatalf("starts at %.2f, want the budget", r)
	}

	// Throttled while the service accepted 80/s: just under that.
	throttle(l, 78, 2)
	syncNow(f)
	// 80 attempts in the last second, 2 throttled: 78/s accepted.
	if r := fleetRate(t, pool); !near(r, 0.97*78, 0.01) {
		t.Fatalf("after throttling at 78/s accepted: %.2f, want %.2f", r, 0.97*78)
	}
	// Again within the cooldown: unchanged (the rate had no time to act).
	throttle(l, 10, 5)
	syncNow(f)
	if r := fleetRate(t, pool); !near(r, 0.97*78, 0.01) {
		t.Fatalf("a second decrease within the cooldown: %.2f", r)
	}

	// After the cooldown, a report of very little accepted: never below
	// half the rate at once.
	set(`UPDATE bulk_import_budget SET decreased_at = now() - interval '2 seconds'`)
	l.recent = [buckets]struct {
		slot             int64
		calls, throttles int64
	}{}
	throttle(l, 1, 1)
	syncNow(f)
	low := fleetRate(t, pool)
	if !near(low, 0.97*78*Floor, 0.01) {
		t.Fatalf("after a report of 1/s accepted: %.2f, want half of %.2f", low, 0.97*78)
	}

	// Without throttling it climbs by budget/400 a second: 4 s -> +1.
	set(`UPDATE bulk_import_budget SET updated_at = now() - interval '4 seconds'`)
	syncNow(f)
	if r := fleetRate(t, pool); !near(r, low+4*100*Increase, 0.1) {
		t.Fatalf("after 4 s without throttling: %.2f, want %.2f", r, low+1)
	}
	// At most 5 s of increase per update (a fleet that was idle for a day
	// resumes where it was), never above the budget.
	set(`UPDATE bulk_import_budget SET updated_at = now() - interval '1 day', rate = 99.5`)
	syncNow(f)
	if r := fleetRate(t, pool); r != 100 {
		t.Fatalf("above the budget: %.2f", r)
	}

	// A budget raised (the last worker with the old one gone) with no
	// throttling in the last minute applies at once; within a minute of
	// throttling the rate climbs to it.
	raised := New(CognitoCreate, 200, 0)
	defer raised.Close()
	rf := NewFleet(pool, "raised", time.Second, logging.Discard(), raised)
	set(`UPDATE bulk_import_worker SET heartbeat_at = now() - interval '1 minute' WHERE worker_id = 'w'`)
	set(`UPDATE bulk_import_budget SET decreased_at = now() - interval '2 minutes', rate = 60`)
	syncNow(rf)
	if r := fleetRate(t, pool); r != 200 {
		t.Fatalf("a raised budget: %.2f, want 200", r)
	}
	set(`UPDATE bulk_import_budget SET decreased_at = now() - interval '10 seconds', rate = 60`)
	syncNow(f) // back to 100, throttled 10 s ago: no jump
	if r := fleetRate(t, pool); r > 61 {
		t.Fatalf("a changed budget within a minute of throttling: %.2f, want about 60", r)
	}

	// A young limit (less than a second of data) halves rather than trust
	// its short measure.
	young := New(CognitoCreate, 100, 0)
	defer young.Close()
	yf := NewFleet(pool, "young", time.Second, logging.Discard(), young)
	set(`UPDATE bulk_import_budget SET decreased_at = NULL, rate = 60`)
	young.calls.Add(3)
	young.Throttled()
	syncNow(yf)
	if r := fleetRate(t, pool); !near(r, 30, 0.01) {
		t.Fatalf("a young limit's throttle: %.2f, want 30", r)
	}
}

// Many workers throttled at the same instant lower the rate once.
func TestManyWorkersThrottledTogetherLowerTheRateOnce(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	ctx := context.Background()
	const workers = 12
	var limits []*Limit
	var fleets []*Fleet
	for i := range workers {
		l := New(CognitoCreate, 120, 0)
		defer l.Close()
		limits = append(limits, l)
		fleets = append(fleets, NewFleet(pool, string(rune('a'+i)), time.Second, logging.Discard(), l))
	}
	for _, f := range fleets {
		if err := f.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Each was accepted 4/s and throttled.
	for _, l := range limits {
		throttle(l, 4, 1)
	}
	var wg sync.WaitGroup
	for _, f := range fleets {
		wg.Go(func() {
			if err := f.Sync(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	r := fleetRate(t, pool)
	// Once: the first to sync sees at most 48/s accepted in all, so the
	// rate halves (the floor); twice would make it 30.
	if !near(r, 60, 0.01) {
		var calls, throttles int64
		_ = pool.QueryRow(ctx, `SELECT calls, throttles FROM bulk_import_budget`).Scan(&calls, &throttles)
		t.Fatalf("rate %.2f after %d workers' throttles (calls %d, throttles %d)", r, workers, calls, throttles)
	}
	var throttles int64
	if err := pool.QueryRow(ctx, `SELECT throttles FROM bulk_import_budget`).Scan(&throttles); err != nil || throttles != workers {
		t.Fatalf("throttles counted: %d, %v", throttles, err)
	}
}

// lockedBuffer is a log's output, written by one goroutine and read by
// the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// Workers whose flags disagree (a rolling deploy that changes a budget)
// use the smallest budget among the live ones, whoever synced last; the
// others say so once. When the smallest goes, the next applies.
func TestWorkersWithDifferentBudgetsUseTheSmallest(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	ctx := context.Background()
	var highLog, lowLog lockedBuffer
	high, low := New(CognitoCreate, 40, 0), New(CognitoCreate, 20, 0)
	defer high.Close()
	defer low.Close()
	hf := NewFleet(pool, "high", time.Second, slog.New(slog.NewTextHandler(&highLog, nil)), high)
	lf := NewFleet(pool, "low", time.Second, slog.New(slog.NewTextHandler(&lowLog, nil)), low)
	check := func(f *Fleet, l *Limit, want float64) {
		t.Helper()
		if err := f.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if st := l.State(); st.Budget != want || st.Rate != want {
			t.Fatalf("after %s's sync: %+v, want budget and rate %g", f.id, st, want)
		}
		if r := fleetRate(t, pool); r != want {
			t.Fatalf("after %s's sync the fleet's rate is %g, want %g", f.id, r, want)
		}
	}
	check(hf, high, 40) // alone
	for range 10 {
		check(lf, low, 20)
		check(hf, high, 20)
	}
	if n := strings.Count(highLog.String(), "level=WARN"); n != 1 || !strings.Contains(highLog.String(), "the smallest") {
		t.Fatalf("the worker whose flag is not used warned %d times, want once:\n%s", n, highLog.String())
	}
	if strings.Contains(lowLog.String(), "level=WARN") {
		t.Fatalf("the worker whose flag is used warned:\n%s", lowLog.String())
	}
	if st, err := Read(ctx, pool, 10*time.Second); err != nil || len(st) != 1 || st[0].Budget != 20 || st[0].Workers != 2 ||
		!slices.Equal(st[0].WorkerBudgets, []float64{20, 40}) {
		t.Fatalf("status: %+v, %v", st, err)
	}

	// The low worker's row expires: the high one's budget applies at once.
	if _, err := pool.Exec(ctx, `UPDATE bulk_import_worker SET heartbeat_at = now() - interval '1 minute' WHERE worker_id = 'low'`); err != nil {
		t.Fatal(err)
	}
	check(hf, high, 40)
	check(hf, high, 40)
	if st, err := Read(ctx, pool, 10*time.Second); err != nil || len(st) != 1 || st[0].Budget != 40 || st[0].Workers != 1 || st[0].WorkerBudgets != nil {
		t.Fatalf("status once the low worker is gone: %+v, %v", st, err)
	}
	// It comes back, and leaves.
	check(lf, low, 20)
	check(hf, high, 20)
	lf.leave(ctx)
	check(hf, high, 40)
	if n := strings.Count(highLog.String(), "level=WARN"); n != 2 {
		t.Fatalf("warned %d times over two disagreements, want twice:\n%s", n, highLog.String())
	}
}

// Status says what holds a budget below itself: here the live workers'
// password caps (10/s each, no password budget) hold a create budget of
// 40/s to 20/s, and a third worker's cap lifts it to 30.
func TestStatusSaysWhatHoldsABudgetBelowItself(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	ctx := context.Background()
	worker := func(id string) *Fleet {
		t.Helper()
		create, get, password := New(CognitoCreate, 40, 0), New(CognitoGet, 60, 0), New(CognitoPassword, 0, 10)
		t.Cleanup(func() { create.Close(); get.Close(); password.Close() })
		f := NewFleet(pool, id, time.Second, logging.Discard(), create, get, password, nil)
		if err := f.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		return f
	}
	bound := func() map[string]*Bound {
		t.Helper()
		st, err := Read(ctx, pool, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]*Bound{}
		for _, s := range st {
			out[s.Name] = s.BoundBy
		}
		return out
	}
	worker("a")
	worker("b")
	b := bound()
	if b[CognitoGet] != nil {
		t.Errorf("the get budget needs nothing, yet: %+v", b[CognitoGet])
	}
	want := Bound{Limit: CognitoPassword, By: "cap", Rate: 20, Allowed: 40, Fix: "--cognito-password-budget 40 or more"}
	if c := b[CognitoCreate]; c == nil || *c != want {
		t.Fatalf("two workers: %+v, want %+v", c, want)
	}
	worker("c")
	if c := bound()[CognitoCreate]; c == nil || c.Rate != 30 {
		t.Fatalf("three workers: %+v, want held to 30", c)
	}
	worker("d")
	if c := bound()[CognitoCreate]; c != nil {
		t.Fatalf("four workers: %+v, want nothing holding it", c)
	}
	// A live worker of an earlier version does not say: nothing is said.
	if _, err := pool.Exec(ctx, `UPDATE bulk_import_budget_share SET needs = NULL WHERE worker_id = 'd'`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `DELETE FROM bulk_import_budget_share WHERE worker_id = 'c'`); err != nil {
		t.Fatal(err)
	}
	if c := bound()[CognitoCreate]; c != nil {
		t.Fatalf("with a worker that does not say: %+v", c)
	}
}
