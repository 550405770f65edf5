package budget

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return n
}

// Workers sync concurrently while each goes busy and idle at random,
// requests wait for tokens, workers leave and join, and syncs fail at
// random: before they are sent, or after they committed (the answer
// lost), or their answer is applied late. The shares, as they apply, never
// add up to more than the fleet's rate (its budget: nothing throttles).
// A few seconds by default; STRESS_SECONDS=60 for longer (STRESS_WORKERS,
// STRESS_FAULT_PERCENT, STRESS_INTERVAL_MS too).
func TestStressTheSharesNeverExceedTheBudget(t *testing.T) {
	t.Parallel()
	seconds := envInt(t, "STRESS_SECONDS", 3)
	workers := envInt(t, "STRESS_WORKERS", 5)
	faults := envInt(t, "STRESS_FAULT_PERCENT", 10)
	interval := time.Duration(envInt(t, "STRESS_INTERVAL_MS", 100)) * time.Millisecond
	const budget = 40.0

	// Each worker has its pool in production: enough connections for all.
	pool := newPool(t)
	cfg := pool.Config().Copy()
	cfg.MaxConns = int32(4 * workers)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	rec := newRecorder()
	var lost, notSentN, late atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type slot struct {
		mu   sync.Mutex
		m    *member
		work *atomic.Bool
	}
	var seq atomic.Int64
	start := func(s *slot) {
		m := newMember(t, pool, fmt.Sprintf("w%d", seq.Add(1)), budget, 0, interval)
		rec.watch(m)
		work := m.busy()
		work.Store(rand.IntN(2) == 0)
		m.fleet.live = 5 * interval // outages below cross the liveness window
		var outUntil atomic.Int64
		m.fleet.beforeQuery = func() error {
			if time.Now().UnixNano() < outUntil.Load() {
				notSentN.Add(1)
				return notSent{}
			}
			if rand.IntN(100) < 3 { // an outage of 6 to 10 intervals
				outUntil.Store(time.Now().Add(time.Duration(6+rand.IntN(5)) * interval).UnixNano())
				notSentN.Add(1)
				return notSent{}
			}
			if rand.IntN(100) < faults/2 {
				notSentN.Add(1)
				return notSent{}
			}
			return nil
		}
		m.fleet.afterQuery = func() error {
			switch r := rand.IntN(100); {
			case r < faults/2:
				lost.Add(1)
				return errLost
			case r < faults:
				late.Add(1)
				time.Sleep(time.Duration(rand.Int64N(int64(interval / 5))))
			}
			return nil
		}
		m.run()
		s.mu.Lock()
		s.m, s.work = m, work
		s.mu.Unlock()
	}
	slots := make([]*slot, workers)
	for i := range slots {
		slots[i] = &slot{}
		start(slots[i])
	}
	var wg sync.WaitGroup
	for _, s := range slots {
		wg.Add(2)
		go func() { // busy and idle at random
			defer wg.Done()
			for ctx.Err() == nil {
				s.mu.Lock()
				work := s.work
				s.mu.Unlock()
				work.Store(rand.IntN(2) == 0)
				sleep(ctx, time.Duration(rand.Int64N(int64(6*interval)))+interval/5)
			}
		}()
		go func() { // requests while busy
			defer wg.Done()
			for ctx.Err() == nil {
				s.mu.Lock()
				m, work := s.m, s.work
				s.mu.Unlock()
				if !work.Load() {
					sleep(ctx, interval/10)
					continue
				}
				wctx, c := context.WithTimeout(ctx, interval)
				_ = m.limit.Wait(wctx)
				c()
			}
		}()
	}
	wg.Add(1)
	go func() { // one leaves, another joins
		defer wg.Done()
		for ctx.Err() == nil {
			sleep(ctx, time.Duration(rand.Int64N(int64(20*interval)))+5*interval)
			if ctx.Err() != nil {
				return
			}
			s := slots[rand.IntN(len(slots))]
			s.mu.Lock()
			old := s.m
			s.mu.Unlock()
			old.leave()
			start(s)
		}
	}()
	sleep(ctx, time.Duration(seconds)*time.Second)
	cancel()
	wg.Wait()
	t.Logf("%d lost answers, %d syncs not sent, %d answers applied late", lost.Load(), notSentN.Load(), late.Load())
	rec.check(t, budget)
	if rec.events < 50 || rec.max == 0 {
		t.Fatalf("%d share changes, largest sum %g: the workers hardly took their shares", rec.events, rec.max)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
