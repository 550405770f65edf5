package pgtest

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// WatchWorkerSessions samples, every period until the returned stop, the
// server's sessions of the workers (application_name "bui worker ROLE
// ID", see dbpool.AppName) through pool, and stop returns the most each
// worker (by ID) and all of them together held at once.
func WatchWorkerSessions(ctx context.Context, pool *pgxpool.Pool, period time.Duration) (stop func() (perWorker map[string]int, fleet int)) {
	ctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	peaks := map[string]int{}
	fleetPeak := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			if now, total, err := workerSessions(ctx, pool); err == nil {
				mu.Lock()
				for id, n := range now {
					peaks[id] = max(peaks[id], n)
				}
				fleetPeak = max(fleetPeak, total)
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() (map[string]int, int) {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return peaks, fleetPeak
	}
}

// workerSessions counts the workers' sessions now, by worker ID, and in all.
func workerSessions(ctx context.Context, pool *pgxpool.Pool) (map[string]int, int, error) {
	rows, err := pool.Query(ctx, `SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 'bui worker %'`)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	now := map[string]int{}
	total := 0
	for rows.Next() {
		var app string
		if err := rows.Scan(&app); err != nil {
			return nil, 0, err
		}
		f := strings.Fields(app) // bui worker ROLE ID
		now[f[len(f)-1]]++
		total++
	}
	return now, total, rows.Err()
}
