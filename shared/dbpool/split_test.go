package dbpool_test

import (
	"context"
	"strings"
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
		{8, true, dbpool.WorkerConns{Rows: 5, Control: 2, Listen: 1}, ""},
		{8, false, dbpool.WorkerConns{Rows: 6, Control: 2}, ""},
		{5, true, dbpool.WorkerConns{Rows: 2, Control: 2, Listen: 1}, ""},
		{4, false, dbpool.WorkerConns{Rows: 2, Control: 2}, ""},
		{4, true, dbpool.WorkerConns{}, "--db-max-conns 4: want at least 5 (2 for the rows, 2 for the maintainer and the fleet's bookkeeping, 1 listening"},
		{0, false, dbpool.WorkerConns{}, "--db-max-conns 0: want at least 4"},
		{-3, false, dbpool.WorkerConns{}, "want at least 4"},
	} {
		got, err := dbpool.SplitWorkerConns(c.total, c.listen, "--db-max-conns")
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%d, %v: error %v, want %q", c.total, c.listen, err, c.err)
		case c.err == "" && (err != nil || got != c.want || got.Total() != c.total):
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
