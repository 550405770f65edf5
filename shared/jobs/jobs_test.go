package jobs_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/shared/csvrows"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/logging"
)

func setup(t *testing.T) (*pgxpool.Pool, *jobs.Store, *lifecycle.Lifecycle) {
	t.Helper()
	_, pool := pgtest.NewPFMLDatabase(t)
	return pool, jobs.NewStore(pool), lifecycle.New(pool, nil, logging.Discard())
}

func reader(t *testing.T, name, content string) *csvrows.Reader {
	t.Helper()
	r, err := csvrows.NewReader(name, strings.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func record(t *testing.T, lc *lifecycle.Lifecycle, job, name, content string) jobs.SourceCounts {
	t.Helper()
	r := reader(t, name, content)
	c, err := lc.RecordSource(context.Background(), job, name, r.Header(), r)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMigrateIsIdempotentAndConcurrent(t *testing.T) {
	t.Parallel()
	pool, _, _ := setup(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { errs <- jobs.Migrate(context.Background(), pool) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestLockIsExclusive(t *testing.T) {
	t.Parallel()
	_, s, _ := setup(t)
	ctx := context.Background()
	unlock, err := s.Lock(ctx, "j1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(ctx, "j1"); !errors.Is(err, jobs.ErrJobBusy) {
		t.Fatalf("second lock: %v", err)
	}
	other, err := s.Lock(ctx, "j2")
	if err != nil {
		t.Fatalf("other job: %v", err)
	}
	other()
	unlock()
	again, err := s.Lock(ctx, "j1")
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	again()
}

// startAttempt records an attempt as a worker does, in a batch.
func startAttempt(t *testing.T, pool *pgxpool.Pool, lc *lifecycle.Lifecycle, job string, row int64, receiveCount int) jobs.RowInfo {
	t.Helper()
	var ri jobs.RowInfo
	pgtest.Batch(t, pool, func(b *pgx.Batch) { lc.QueueStartAttempt(b, job, row, receiveCount, &ri) })
	return ri
}

func TestSelectionPicksIdleRowsAndLeavesRedrivenOnesToTheDLQ(t *testing.T) {
	t.Parallel()
	pool, s, lc := setup(t)
	ctx := context.Background()
	if _, _, err := lc.Create(ctx, "j1", false, jobs.Limits{}); err != nil {
		t.Fatal(err)
	}
	record(t, lc, "j1", "a.csv", "fein,email\n1,a@b.co\n2,b@b.co\n3,c@b.co\n4,d@b.co\n5,e@b.co\n")
	if err := lc.MarkSent(ctx, "j1"); err != nil {
		t.Fatal(err)
	}
	if err := lc.MarkRecorded(ctx, "j1"); err != nil {
		t.Fatal(err)
	}
	// Rows 1-3 were sent an hour ago; row 2 was received since (a sign of
	// life); row 3 used up its attempts an hour ago (SQS moved its message
	// to the DLQ); row 4 was never sent; row 5 failed.
	if _, err := pool.Exec(ctx, `UPDATE bulk_import_row SET sent_at = now() - interval '1 hour', updated_at = now() - interval '1 hour'
		WHERE job_id = 'j1' AND row_no IN (1, 2, 3)`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE bulk_import_row SET updated_at = now() - interval '1 hour' WHERE job_id = 'j1' AND row_no = 4`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE bulk_import_row SET attempts = 5 WHERE job_id = 'j1' AND row_no = 3`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE bulk_import_row SET updated_at = now() - interval '1 hour', sent_at = now() - interval '1 hour' WHERE job_id = 'j1' AND row_no = 3`); err != nil {
		t.Fatal(err)
	}
	startAttempt(t, pool, lc, "j1", 2, 1)
	if _, err := lc.ClaimFailure(ctx, "j1", 5, "EMPLOYER_NOT_FOUND", "no employer"); err != nil {
		t.Fatal(err)
	}
	rows := func(sel jobs.Selection) []int64 {
		t.Helper()
		page, err := s.RowsToSend(ctx, "j1", sel, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, p := range page {
			out = append(out, p.Row)
		}
		return out
	}
	for _, tt := range []struct {
		sel  jobs.Selection
		want []int64
	}{
		{jobs.Selection{}, []int64{1, 2, 3, 4}},
		{jobs.Selection{IdleFor: 30 * time.Minute}, []int64{1, 3, 4}},
		{jobs.Selection{IdleFor: 30 * time.Minute, MaxAttempts: 5, RedrivenIdleFor: 2 * time.Hour}, []int64{1, 4}},
		{jobs.Selection{IdleFor: 30 * time.Minute, MaxAttempts: 5, RedrivenIdleFor: 30 * time.Minute}, []int64{1, 3, 4}},
		{jobs.Selection{IdleFor: 2 * time.Hour}, nil},
	} {
		if got := rows(tt.sel); !slices.Equal(got, tt.want) {
			t.Errorf("selection %+v picked %v, want %v", tt.sel, got, tt.want)
		}
		byJob, err := s.JobsToResend(ctx, tt.sel)
		if err != nil || byJob["j1"] != int64(len(tt.want)) {
			t.Errorf("JobsToResend(%+v) = %v, %v", tt.sel, byJob, err)
		}
	}
	// Marking rows re-sent makes them fresh and restarts their attempts;
	// a row no longer queued is not marked.
	marked, err := lc.MarkResent(ctx, "j1", []int64{1, 3, 5})
	if err != nil || !slices.Equal(marked, []int64{1, 3}) {
		t.Fatalf("marked %v, %v", marked, err)
	}
	if got := rows(jobs.Selection{IdleFor: 30 * time.Minute}); !slices.Equal(got, []int64{4}) {
		t.Fatalf("after re-sending: %v", got)
	}
	var attempts, resends int
	if err := pool.QueryRow(ctx, `SELECT attempts, resends FROM bulk_import_row WHERE job_id = 'j1' AND row_no = 3`).Scan(&attempts, &resends); err != nil || attempts != 0 || resends != 1 {
		t.Fatalf("row 3: %d attempts, %d resends, %v", attempts, resends, err)
	}
}

// A cancel reason is an operator's text: every reader gets it masked
// (splitter status, jobs, wait, and their --json), even one recorded
// before reasons were masked.
func TestACancelReasonIsReadMasked(t *testing.T) {
	t.Parallel()
	pool, s, lc := setup(t)
	ctx := context.Background()
	if _, _, err := lc.Create(ctx, "j1", false, jobs.Limits{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE bulk_import_job SET cancelled_at = now(), cancel_reason = 'asked by mary.o''connor@example.com for 123456789' WHERE job_id = 'j1'`); err != nil {
		t.Fatal(err)
	}
	const want = "asked by m***@***.com for *****6789"
	st, err := s.Status(ctx, "j1")
	if err != nil || st.CancelReason != want {
		t.Fatalf("status reason %q, %v", st.CancelReason, err)
	}
	list, err := s.Recent(ctx, 10)
	if err != nil || len(list) != 1 || list[0].CancelReason != want {
		t.Fatalf("recent %+v, %v", list, err)
	}
}

// A migration a database missed (another branch's, numbered below the
// highest applied) is applied; the ones recorded are not applied again.
func TestMigrateAppliesEveryMissingVersion(t *testing.T) {
	t.Parallel()
	pool, _, _ := setup(t)
	ctx := context.Background()
	// As if migration 7 had come after 8 to 10 were applied.
	if _, err := pool.Exec(ctx, `ALTER TABLE bulk_import_budget_share DROP COLUMN budget;
		DELETE FROM bulk_import_schema_version WHERE version = 7`); err != nil {
		t.Fatal(err)
	}
	if err := jobs.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if n := pgtest.Count(t, pool, `SELECT count(*) FROM information_schema.columns WHERE table_name = 'bulk_import_budget_share' AND column_name = 'budget'`); n != 1 {
		t.Fatal("the missing migration was not applied")
	}
	if n := pgtest.Count(t, pool, `SELECT count(*) FROM bulk_import_schema_version WHERE version = 7`); n != 1 {
		t.Fatal("the missing migration was not recorded")
	}
	if err := jobs.Migrate(ctx, pool); err != nil {
		t.Fatalf("migrating again: %v", err)
	}
}
