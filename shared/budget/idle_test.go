package budget

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// busy makes the member's work settable, before it runs: busy while the
// returned flag is set (a message in flight), idle at once when it is not
// (nothing ever received, and no grace since its start).
func (m *member) busy() *atomic.Bool {
	var b atomic.Bool
	b.Store(true)
	m.fleet.started = time.Time{}
	m.fleet.Watch(func() time.Time { return time.Time{} }, func() int64 {
		if b.Load() {
			return 1
		}
		return 0
	})
	return &b
}

func readState(t *testing.T, m *member) State {
	t.Helper()
	st, err := Read(context.Background(), m.fleet.pool, 10*time.Second)
	if err != nil || len(st) != 1 {
		t.Fatalf("read: %+v, %v", st, err)
	}
	return st[0]
}

// An idle worker gives its share back to the busy ones, and takes it again
// when it has work; a request waiting for a token is work (it waits, it
// does not fail).
func TestIdleWorkersGiveTheirShareToTheBusyOnes(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	var ms []*member
	var work []*atomic.Bool
	for _, id := range []string{"a", "b", "c"} {
		m := newMember(t, pool, id, 30, 0, 100*time.Millisecond)
		work = append(work, m.busy())
		m.run()
		ms = append(ms, m)
	}
	a, b, c := ms[0], ms[1], ms[2]
	waitShares(t, 10, a, b, c)

	work[2].Store(false)
	waitShares(t, 15, a, b)
	waitShares(t, 0, c)
	eventually(t, func() bool { st := readState(t, a); return st.Workers == 3 && st.Idle == 1 },
		func() string { return fmt.Sprintf("status: %+v, want 3 workers, 1 idle", readState(t, a)) })

	// A message of the idle worker waits for a token: that is work, so it
	// takes its share again (after the others lowered theirs).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.limit.Wait(ctx); err != nil {
		t.Fatalf("a request of the idle worker: %v", err)
	}

	work[2].Store(true)
	waitShares(t, 10, a, b, c)
	eventually(t, func() bool { st := readState(t, a); return st.Workers == 3 && st.Idle == 0 },
		func() string { return fmt.Sprintf("status: %+v, want 3 workers, none idle", readState(t, a)) })
}

// When every live worker is idle nothing changes: they split the budget
// as if none were (a worker with work at once takes it as a joiner does).
func TestWhenEveryWorkerIsIdleTheyKeepTheirShares(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	var ms []*member
	var work []*atomic.Bool
	for _, id := range []string{"a", "b", "c"} {
		m := newMember(t, pool, id, 30, 0, 100*time.Millisecond)
		work = append(work, m.busy())
		m.run()
		ms = append(ms, m)
	}
	work[2].Store(false)
	waitShares(t, 15, ms[0], ms[1])
	waitShares(t, 0, ms[2])
	work[0].Store(false)
	work[1].Store(false)
	waitShares(t, 10, ms...)
	// And they keep them, sync after sync.
	before := make([]int64, len(ms))
	for i, m := range ms {
		before[i] = m.fleet.Syncs()
	}
	eventually(t, func() bool {
		for i, m := range ms {
			if m.fleet.Syncs() < before[i]+3 {
				return false
			}
		}
		return true
	}, func() string { return "three more syncs each" })
	waitShares(t, 10, ms...)
	if st := readState(t, ms[0]); st.Workers != 3 || st.Idle != 3 {
		t.Fatalf("status: %+v, want 3 workers, all idle", st)
	}
}

// A worker that has work again never takes the fleet over its budget: it
// takes its share only once every other worker has lowered its own. Four
// workers sync concurrently (each every 50 ms, and at once when notified);
// one after the other goes idle and busy again, then two together.
func TestAWorkerBusyAgainNeverTakesTheFleetOverItsBudget(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	var ms []*member
	var work []*atomic.Bool
	rec := newRecorder() // every share as it applies
	for _, id := range []string{"a", "b", "c", "d"} {
		m := newMember(t, pool, id, 40, 0, 50*time.Millisecond)
		work = append(work, m.busy())
		rec.watch(m)
		m.run()
		ms = append(ms, m)
	}
	waitShares(t, 10, ms...)
	others := func(i ...int) []*member {
		return slices.DeleteFunc(slices.Clone(ms), func(m *member) bool {
			return slices.ContainsFunc(i, func(j int) bool { return ms[j] == m })
		})
	}
	for round := range 8 {
		i := round % len(ms)
		work[i].Store(false)
		waitShares(t, 40.0/3, others(i)...)
		waitShares(t, 0, ms[i])
		work[i].Store(true)
		waitShares(t, 10, ms...)
	}
	for round := range 4 {
		i, j := round%len(ms), (round+1)%len(ms)
		work[i].Store(false)
		work[j].Store(false)
		waitShares(t, 20, others(i, j)...)
		waitShares(t, 0, ms[i], ms[j])
		work[i].Store(true)
		work[j].Store(true)
		waitShares(t, 10, ms...)
	}
	rec.check(t, 40)
}

// An idle worker that has work again syncs at once, and the others lower
// their shares at once (notified), not at their next periodic sync (here
// ten seconds away).
func TestAWorkerBusyAgainSyncsAtOnceAndTheOthersFollow(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	a := newMember(t, pool, "a", 30, 0, 10*time.Second)
	a.busy()
	a.run()
	waitShares(t, 30, a)
	waitListening(t, pool)
	b := newMember(t, pool, "b", 30, 0, 10*time.Second)
	work := b.busy()
	work.Store(false)
	b.run()
	// b joined idle and no longer syncs fast as a joiner does.
	eventually(t, func() bool { return b.fleet.Syncs() > 0 && !b.fleet.warming.Load() && readState(t, a).Idle == 1 },
		func() string { return fmt.Sprintf("b joined idle: %+v", readState(t, a)) })
	waitShares(t, 30, a)
	waitShares(t, 0, b)
	work.Store(true)
	waitShares(t, 15, a, b)
}
