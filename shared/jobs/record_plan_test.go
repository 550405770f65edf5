package jobs_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/logging"
)

// The first import on a fresh database (bulk_import_row never analyzed)
// finds its duplicates in a statement linear in its rows: the planner,
// which expects a row or two, once chose a nested loop that recomputed the
// duplicates' window for every row, and a 20,000-row splitter run did not
// finish in 7 minutes. A statement of that plan runs into the timeout here
// (tens of minutes of work); the linear one takes a second or two.
func TestTheFirstLargeImportOnAFreshDatabaseRecordsInLinearTime(t *testing.T) {
	t.Parallel()
	url, _ := pgtest.NewPFMLDatabase(t)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["statement_timeout"] = "60s"
	ctx := context.Background()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var analyzed int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'bulk_import_row'
		AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)`).Scan(&analyzed); err != nil || analyzed != 0 {
		t.Fatalf("the table was analyzed (%d, %v): the test needs a fresh one", analyzed, err)
	}
	const n = 40000
	var csv strings.Builder
	csv.WriteString("fein,email\n")
	for i := range n {
		fmt.Fprintf(&csv, "123456789,u%d@example.com\n", i)
	}
	csv.WriteString("123456789,u7@example.com\n") // one duplicate
	lc := lifecycle.New(pool, nil, logging.Discard())
	if _, _, err := lc.Create(ctx, "first", false, jobs.Limits{}); err != nil {
		t.Fatal(err)
	}
	c := record(t, lc, "first", "first.csv", csv.String())
	if c.Rows != n+1 || c.Duplicates != 1 {
		t.Fatalf("counts %+v, want %d rows, 1 duplicate", c, n+1)
	}
}
