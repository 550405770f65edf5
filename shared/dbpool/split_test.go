package dbpool_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/shared/dbpool"
)

func TestAWorkersConnectionsAreSplitWithinItsTotal(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		total  int
		listen bool
		want   dbpool.WorkerConns
		err    string
	}{
		{8, true, dbpool.WorkerConns{Rows: 4, Control: 3, Listen: 1}, ""},
		{8, false, dbpool.WorkerConns{Rows: 5, Control: 3}, ""},
		{0, true, dbpool.WorkerConns{Rows: 4, Control: 3, Listen: 1}, ""}, // the default
		{6, true, dbpool.WorkerConns{Rows: 2, Control: 3, Listen: 1}, ""},
		{5, false, dbpool.WorkerConns{Rows: 2, Control: 3}, ""},
		{40, true, dbpool.WorkerConns{Rows: 36, Control: 3, Listen: 1}, ""},
		{5, true, dbpool.WorkerConns{}, "--db-max-conns 5: want at least 6 (2 for the rows, 3 for the maintainer and the fleet's bookkeeping, 1 listening"},
		{4, false, dbpool.WorkerConns{}, "--db-max-conns 4: want at least 5"},
		{-3, false, dbpool.WorkerConns{}, "want at least 5"},
	} {
		got, err := dbpool.SplitWorkerConns(c.total, c.listen, "--db-max-conns")
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%d, %v: error %v, want %q", c.total, c.listen, err, c.err)
		case c.err == "" && (err != nil || got != c.want || got.Total() != max(c.total, dbpool.DefaultWorkerConns*boolInt(c.total == 0))):
			t.Errorf("%d, %v: %+v (total %d), %v; want %+v", c.total, c.listen, got, got.Total(), err, c.want)
		}
	}
}

// The server keeps 63 bytes of an application_name: a long one keeps its
// end (what tells two workers apart), and other bytes than printable
// ASCII are not sent.
func TestAppNameFitsTheServerAndKeepsItsEnd(t *testing.T) {
	t.Parallel()
	long := "bui worker rows ip-10-0-1-23.ec2.internal.some.very.long.domain/4242/deadbeef"
	got := dbpool.AppName(long)
	if len(got) != 63 || !strings.HasSuffix(got, "/4242/deadbeef") || !strings.HasPrefix(got, "bui worker rows") {
		t.Fatalf("AppName(%q) = %q (%d bytes)", long, got, len(got))
	}
	if got := dbpool.AppName("bui worker rows höst\n/1/ab"); got != "bui worker rows h??st?/1/ab" {
		t.Fatalf("AppName = %q", got)
	}
	if got := dbpool.AppName("bui splitter"); got != "bui splitter" {
		t.Fatalf("AppName = %q", got)
	}

	// The server sees what was asked for.
	ctx := context.Background()
	pool, err := dbpool.Open(ctx, pgtest.NewDatabase(t), 1, long)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var seen string
	if err := pool.QueryRow(ctx, `SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()`).Scan(&seen); err != nil {
		t.Fatal(err)
	}
	if seen != got {
		t.Fatalf("the server has %q, want %q", seen, got)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// A pool that was never short of connections reports no waits: opening
// one (the ping at Open, the first ask) is not waiting for another to be
// released.
func TestAPoolNeverShortReportsNoWaits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	rows, err := dbpool.Open(ctx, url, 4, "")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	control, err := dbpool.Open(ctx, url, 3, "")
	if err != nil {
		t.Fatal(err)
	}
	defer control.Close()
	for range 5 {
		if _, err := rows.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
	}
	u := dbpool.UsageOf(dbpool.WorkerConns{Rows: 4, Control: 3, Listen: 1}, rows, control, true)
	if u.Waited != 0 || u.Acquires < 5 || u.Max != 8 || u.Open != 3 || u.InUse != 0 {
		t.Fatalf("usage %+v: want no waits, 5 asks or more, 8 at most, 3 open (a connection each and the listener)", u)
	}

	// Eight askers of four connections, each holding one for 10 ms twenty
	// times: some find none free and wait.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				if _, err := rows.Exec(ctx, "SELECT pg_sleep(0.01)"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if u := dbpool.UsageOf(dbpool.WorkerConns{Rows: 4, Control: 3}, rows, control, false); u.Waited == 0 || u.WaitedMS == 0 || u.Open > 5 {
		t.Fatalf("usage %+v: want waits, and no more than 4 + 1 connections", u)
	}
}
