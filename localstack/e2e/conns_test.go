package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/dbpool"
)

// Four workers at concurrency 64, each with a fleet budget (its listener
// counts), fit a server of 50 connections: a worker opens at most its 8
// (--db-max-conns' default) whatever its concurrency, every row succeeds,
// no worker is refused a connection, and status shows what the fleet
// holds. Before, each would have opened concurrency + 4 (272 in all).
func TestFourWorkersAtConcurrency64FitASmallServer(t *testing.T) {
	t.Parallel()
	pg := pgtest.StartServer(t, "max_connections=50")
	s := stacktest.New(t, stacktest.Options{Postgres: pg})
	s.AddEmployer(t, "123456789", 1001)
	envv := env(s)
	var workers []interface{ Output() string }
	for range 4 {
		workers = append(workers, startWorker(t, envv, "--concurrency", "64", "--cognito-create-budget", "1000", "--cognito-get-rate", "0", "--cognito-password-rate", "0"))
	}

	// Each worker's sessions, by application_name ("bui worker ROLE ID"),
	// sampled until the job is done: the most each held at once.
	stopSampling := pgtest.WatchWorkerSessions(context.Background(), s.Pool, 5*time.Millisecond)

	const rows = 1200
	importJobs(t, envv, map[string]string{"conns": writeRows(t, "conns.csv", generatedRows("conns", rows)...)})
	waitAllDone(t, s, []string{"conns"}, 3*time.Minute)
	st := status(t, envv, "conns")
	peak, _ := stopSampling()

	if st["succeeded"] != float64(rows) {
		t.Errorf("succeeded %v of %d", st["succeeded"], rows)
	}
	if len(peak) != 4 {
		t.Errorf("sessions of %d workers seen, want 4: %v", len(peak), peak)
	}
	for id, n := range peak {
		if n > dbpool.DefaultWorkerConns {
			t.Errorf("worker %s held %d connections at once, more than %d", id, n, dbpool.DefaultWorkerConns)
		}
	}
	t.Logf("peak connections per worker: %v", peak)
	for i, w := range workers {
		if out := w.Output(); strings.Contains(out, "too many clients") || strings.Contains(out, "remaining connection slots") {
			t.Errorf("worker %d was refused connections:\n%s", i, out)
		}
	}

	// Status adds up the workers' connections (their heartbeats') and
	// reads the server's limit.
	db, _ := st["database"].(map[string]any)
	if db == nil || db["workers"] != 4.0 || db["unreported"] != 0.0 || db["max"] != 32.0 || db["server_max_connections"] != 50.0 || db["open"].(float64) > 32 || db["acquires"].(float64) == 0 {
		t.Errorf("status database: %v", st["database"])
	}
	if text := statusText(t, envv, "conns"); !strings.Contains(text, "database connections: 4 workers hold") || !strings.Contains(text, "of the 32 they may open") {
		t.Errorf("status does not show the fleet's connections:\n%s", text)
	}
}
