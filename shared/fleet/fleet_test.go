package fleet_test

import (
	"context"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/shared/breaker"
	"github.com/massgov/bulk-user-import/shared/dbpool"
	"github.com/massgov/bulk-user-import/shared/fleet"
	"github.com/massgov/bulk-user-import/shared/logging"
)

func TestAWorkerIsLiveWhileItBeatsAndGoneOnceItStops(t *testing.T) {
	t.Parallel()
	_, pool := pgtest.NewPFMLDatabase(t)
	ctx := context.Background()
	// A worker killed a day ago left its row behind.
	if _, err := pool.Exec(ctx, `INSERT INTO bulk_import_worker (worker_id, heartbeat_at) VALUES ('killed', now() - interval '2 days'),
		('stale', now() - interval '1 minute')`); err != nil {
		t.Fatal(err)
	}
	paused := map[breaker.Dependency]breaker.Fault{breaker.Fineos: {Code: "FINEOS_AUTH_FAILED"}}
	reg := fleet.Register(pool, "w1", func() map[breaker.Dependency]breaker.Fault { return paused }, logging.Discard())
	reg.Conns = func() dbpool.Usage {
		return dbpool.Usage{Open: 3, InUse: 1, Max: 8, Acquires: 100, Waited: 7, WaitedMS: 21}
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); reg.Run(runCtx, time.Hour) }()
	for deadline := time.Now().Add(10 * time.Second); pgtest.Count(t, pool, `SELECT count(*) FROM bulk_import_worker WHERE worker_id = 'w1'`) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no beat recorded")
		}
	}
	live, err := fleet.Live(ctx, pool)
	if err != nil || len(live) != 1 || live[0].ID != "w1" || live[0].Paused[breaker.Fineos].Code != "FINEOS_AUTH_FAILED" {
		t.Fatalf("live %+v, %v: want w1 alone, paused", live, err)
	}
	// Its connections, added up with those of a worker of a version that
	// did not say.
	sum, n := fleet.SumConns(append(live, fleet.Worker{ID: "old"}))
	if want := (dbpool.Usage{Open: 3, InUse: 1, Max: 8, Acquires: 100, Waited: 7, WaitedMS: 21}); n != 1 || sum != want {
		t.Fatalf("connections %+v of %d workers, want %+v of 1", sum, n, want)
	}
	if n := pgtest.Count(t, pool, `SELECT count(*) FROM bulk_import_worker WHERE worker_id = 'killed'`); n != 0 {
		t.Fatal("a row a day old was not deleted")
	}
	stop()
	<-done
	if n := pgtest.Count(t, pool, `SELECT count(*) FROM bulk_import_worker WHERE worker_id = 'w1'`); n != 0 {
		t.Fatal("a stopped worker is still registered")
	}
}
