package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
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

func setupStore(t *testing.T) (*pgxpool.Pool, *jobs.Store, *lifecycle.Lifecycle) {
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

func recordCSV(t *testing.T, lc *lifecycle.Lifecycle, job, name, content string) jobs.SourceCounts {
	t.Helper()
	r := reader(t, name, content)
	c, err := lc.RecordSource(context.Background(), job, name, r.Header(), r)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// failingRows yields some rows, then a file error.
type failingRows struct{ n int }

func (f *failingRows) Next() (csvrows.Row, error) {
	f.n++
	if f.n > 3 {
		return csvrows.Row{}, &csvrows.Error{File: "bad.csv", Line: 5, Err: csvrows.ErrRecordTooLarge}
	}
	return csvrows.Row{Line: f.n + 1, Fields: []string{"1", "x@y.co"}, Email: "x@y.co", FEIN: "000000001"}, nil
}

// startAttempt records an attempt as a worker does, in a batch.
func startAttempt(t *testing.T, pool *pgxpool.Pool, lc *lifecycle.Lifecycle, job string, row int64, receiveCount int) jobs.RowInfo {
	t.Helper()
	var ri jobs.RowInfo
	pgtest.Batch(t, pool, func(b *pgx.Batch) { lc.QueueStartAttempt(b, job, row, receiveCount, &ri) })
	return ri
}

func TestRecordSourceCountsRejectsAndDuplicatesAcrossSources(t *testing.T) {
	t.Parallel()
	_, s, lc := setupStore(t)
	ctx := context.Background()
	if _, _, err := lc.Create(ctx, "j1", false, jobs.Limits{}); err != nil {
		t.Fatal(err)
	}
	c1 := recordCSV(t, lc, "j1", "a.csv", "fein,email\n123456789,a@b.co\n123456789,A@B.CO\n1x,c@d.co\n987654321,a@b.co\n")
	if c1 != (jobs.SourceCounts{Rows: 4, Accepted: 2, Rejected: 1, Duplicates: 1}) {
		t.Fatalf("first source %+v", c1)
	}
	c2 := recordCSV(t, lc, "j1", "b.csv", "email,fein\na@b.co,987654321\nnew@b.co,123456789\n")
	if c2 != (jobs.SourceCounts{Rows: 2, Accepted: 1, Duplicates: 1}) {
		t.Fatalf("second source %+v", c2)
	}
	st, err := s.Status(ctx, "j1")
	if err != nil {
		t.Fatal(err)
	}
	want := jobs.Status{Job: "j1", Counts: jobs.Counts{Total: 6, Queued: 3, Rejected: 1, Duplicate: 2, Unsent: 3}}
	st.CreatedAt = want.CreatedAt
	if st != want {
		t.Fatalf("status %+v, want %+v", st, want)
	}
	probs, err := s.Problems(ctx, "j1", 10)
	if err != nil || len(probs) != 1 || probs[0].Line != 4 || probs[0].Source != "a.csv" || probs[0].Code != csvrows.CodeInvalidFEIN {
		t.Fatalf("problems %+v, %v", probs, err)
	}
}

func TestRefusedSourceRecordsNothing(t *testing.T) {
	t.Parallel()
	pool, s, lc := setupStore(t)
	ctx := context.Background()
	if _, _, err := lc.Create(ctx, "j1", false, jobs.Limits{}); err != nil {
		t.Fatal(err)
	}
	_, err := lc.RecordSource(ctx, "j1", "bad.csv", []string{"fein", "email"}, &failingRows{})
	var fe *csvrows.Error
	if !errors.As(err, &fe) || fe.Line != 5 {
		t.Fatalf("err = %v, want the file's error", err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM bulk_import_row) + (SELECT count(*) FROM bulk_import_source)`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d rows left behind (%v)", n, err)
	}
	if rec, _ := s.SourceRecorded(ctx, "j1", "bad.csv"); rec {
		t.Fatal("refused source marked recorded")
	}
}

func TestCreateRefusesAChangedForceFlagOrACancelledJobBeforeTouchingItsLimits(t *testing.T) {
	t.Parallel()
	_, s, lc := setupStore(t)
	ctx := context.Background()
	limits := jobs.Limits{MaxFailures: 5, MinSample: jobs.DefaultMinSample}
	if _, created, err := lc.Create(ctx, "j1", true, limits); err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	if _, created, err := lc.Create(ctx, "j1", true, jobs.Limits{}); err != nil || created {
		t.Fatalf("re-create: %v %v", created, err)
	}
	kept := func(when string) {
		t.Helper()
		if j, err := s.Job(ctx, "j1"); err != nil || j.Limits != limits {
			t.Fatalf("%s: limits %+v, %v; want %+v (a refused run must change nothing)", when, j.Limits, err, limits)
		}
	}
	if _, _, err := lc.Create(ctx, "j1", false, jobs.Limits{MaxFailures: 1}); err == nil || !strings.Contains(err.Error(), "force registration true") {
		t.Fatalf("changed force flag: %v", err)
	}
	kept("after a run with another force flag")
	if _, err := lc.Cancel(ctx, "j1", "wrong file"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := lc.Create(ctx, "j1", true, jobs.Limits{MaxFailureRatio: 0.1}); !errors.Is(err, jobs.ErrCancelled) || !strings.Contains(err.Error(), "wrong file") {
		t.Fatalf("re-run of a cancelled job: %v", err)
	}
	kept("after a run of the cancelled job")
}

func TestUnsentRowsAndRowTransitions(t *testing.T) {
	t.Parallel()
	pool, s, lc := setupStore(t)
	ctx := context.Background()
	if _, _, err := lc.Create(ctx, "j1", true, jobs.Limits{}); err != nil {
		t.Fatal(err)
	}
	recordCSV(t, lc, "j1", "a.csv", "fein,email\n1,a@b.co\n2,b@b.co\n3,c@b.co\n")
	unsent := jobs.Selection{Unsent: true}
	page, err := s.RowsToSend(ctx, "j1", unsent, 0, 2)
	if err != nil || len(page) != 2 || page[0].Row != 1 || page[0].FEIN != "000000001" {
		t.Fatalf("page %+v, %v", page, err)
	}
	if err := lc.MarkRowsSent(ctx, "j1", []int64{1, 2}); err != nil {
		t.Fatal(err)
	}
	page, err = s.RowsToSend(ctx, "j1", unsent, 0, 10)
	if err != nil || len(page) != 1 || page[0].Row != 3 {
		t.Fatalf("after marking: %+v, %v", page, err)
	}

	ri := startAttempt(t, pool, lc, "j1", 1, 2)
	if ri.State != jobs.Queued || !ri.ForceRegistration || ri.Email != "a@b.co" || ri.Attempts != 2 {
		t.Fatalf("start: %+v", ri)
	}
	if ri := startAttempt(t, pool, lc, "j1", 1, 1); ri.Attempts != 2 {
		t.Fatalf("attempts went down to %d", ri.Attempts)
	}
	if ri := startAttempt(t, pool, lc, "j1", 99, 1); ri.State != "" {
		t.Fatalf("unknown row: %+v", ri)
	}
	if err := lc.NoteError(ctx, "j1", 1, "COGNITO_UNAVAILABLE", "throttled"); err != nil {
		t.Fatal(err)
	}
	pgtest.Batch(t, pool, func(b *pgx.Batch) { lc.QueueSucceed(b, "j1", 1) })
	if _, err := lc.ClaimFailure(ctx, "j1", 1, "X", "late failure"); err != nil {
		t.Fatal(err)
	}
	if _, err := lc.ClaimFailure(ctx, "j1", 2, "EMPLOYER_NOT_FOUND", "no employer"); err != nil {
		t.Fatal(err)
	}
	st, err := s.Status(ctx, "j1")
	if err != nil || st.Succeeded != 1 || st.Failed != 1 || st.Queued != 1 || st.Unsent != 1 || st.Done {
		t.Fatalf("status %+v, %v", st, err)
	}
	if ri := startAttempt(t, pool, lc, "j1", 1, 3); ri.State != jobs.Succeeded {
		t.Fatalf("a failure overwrote success: %+v", ri)
	}
	if _, err := s.Status(ctx, "nope"); !errors.Is(err, jobs.ErrJobNotFound) {
		t.Fatalf("unknown job: %v", err)
	}
}

func TestPruneKeepsTheCountsAndDeletesTheRowsAndTheirPlans(t *testing.T) {
	t.Parallel()
	pool, s, lc := setupStore(t)
	ctx := context.Background()
	var emp string
	if err := pool.QueryRow(ctx, `INSERT INTO employer (employer_id, employer_fein, fineos_employer_id) VALUES (gen_random_uuid(), '123456789', 7)
		RETURNING employer_id::text`).Scan(&emp); err != nil {
		t.Fatal(err)
	}
	for _, job := range []string{"old", "new"} {
		if _, _, err := lc.Create(ctx, job, false, jobs.Limits{}); err != nil {
			t.Fatal(err)
		}
	}
	var b strings.Builder
	b.WriteString("fein,email\n")
	for i := range 25 {
		fmt.Fprintf(&b, "123456789,u%d@b.co\n", i)
	}
	b.WriteString("12x,bad@b.co\n")
	recordCSV(t, lc, "old", "old.csv", b.String())
	recordCSV(t, lc, "new", "new.csv", "fein,email\n123456789,u0@b.co\n")
	// Plans for u0 (named by the new job too) and u1 (only by the old one).
	for _, e := range []string{"u0@b.co", "u1@b.co"} {
		if _, err := pool.Exec(ctx, `INSERT INTO bulk_import_fineos_plan (email, employer_id, fineos_web_id) VALUES ($1, $2, $3)`, e, emp, "web-"+e); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := lc.ClaimFailure(ctx, "old", 2, "EMPLOYER_NOT_FOUND", "x"); err != nil {
		t.Fatal(err)
	}
	pgtest.Batch(t, pool, func(b *pgx.Batch) {
		lc.QueueSucceed(b, "old", 1)
		for row := int64(3); row <= 25; row++ {
			lc.QueueSucceed(b, "old", row)
		}
	})
	if _, err := lc.Prune(ctx, "old", lifecycle.PruneOptions{}); err == nil {
		t.Fatal("an unfinished job was pruned")
	}
	if _, err := pool.Exec(ctx, `UPDATE bulk_import_job SET recorded_at = now(), finished_at = now() - interval '40 days' WHERE job_id = 'old'`); err != nil {
		t.Fatal(err)
	}
	before, err := s.Status(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := s.PruneCandidates(ctx, 30*24*time.Hour, 10)
	if err != nil || !slices.Equal(ids, []string{"old"}) {
		t.Fatalf("candidates %v, %v", ids, err)
	}
	// Stopped after the first batch: the job is marked pruned, some rows remain.
	calls := 0
	n, err := lc.Prune(ctx, "old", lifecycle.PruneOptions{Batch: 10, Continue: func() bool { calls++; return calls == 1 }})
	if err != nil || n != 10 {
		t.Fatalf("first batch: %d, %v", n, err)
	}
	if ids, _ := s.PruneCandidates(ctx, 30*24*time.Hour, 10); !slices.Equal(ids, []string{"old"}) {
		t.Fatalf("a half-pruned job is no longer a candidate: %v", ids)
	}
	n, err = lc.Prune(ctx, "old", lifecycle.PruneOptions{Batch: 10})
	if err != nil || n != 16 {
		t.Fatalf("the rest: %d, %v", n, err)
	}
	if ids, _ := s.PruneCandidates(ctx, 30*24*time.Hour, 10); len(ids) != 0 {
		t.Fatalf("candidates after pruning: %v", ids)
	}
	after, err := s.Status(ctx, "old")
	if err != nil || after.Counts != before.Counts || after.PrunedAt == nil || after.Total != 26 || after.Failed != 1 || after.Rejected != 1 {
		t.Fatalf("status after pruning %+v (before %+v), %v", after, before, err)
	}
	d, err := s.Details(ctx, "old")
	if err != nil || d.FailuresByCode["EMPLOYER_NOT_FOUND"] != 1 || d.FailuresByCode["INVALID_FEIN"] != 1 {
		t.Fatalf("details after pruning %+v, %v", d, err)
	}
	if n := pgtest.Count(t, pool, `SELECT count(*) FROM bulk_import_row WHERE job_id = 'old'`); n != 0 {
		t.Fatalf("%d rows left", n)
	}
	if n := pgtest.Count(t, pool, `SELECT count(*) FROM bulk_import_row WHERE job_id = 'new'`); n != 1 {
		t.Fatalf("the new job lost rows: %d", n)
	}
	var plans []string
	rows, _ := pool.Query(ctx, `SELECT email FROM bulk_import_fineos_plan ORDER BY 1`)
	plans, _ = pgx.CollectRows(rows, pgx.RowTo[string])
	if !slices.Equal(plans, []string{"u0@b.co"}) {
		t.Fatalf("plans left %v: want only the one a retained row names", plans)
	}
	// A pruned job is never reopened or re-run.
	if _, err := lc.Requeue(ctx, "old", []int64{2}); !errors.Is(err, jobs.ErrPruned) {
		t.Fatalf("requeue of a pruned job: %v", err)
	}
	if _, _, err := lc.Create(ctx, "old", false, jobs.Limits{}); !errors.Is(err, jobs.ErrPruned) {
		t.Fatalf("re-run of a pruned job: %v", err)
	}
}

func TestCreateJobKeepsFractionalFailureRatios(t *testing.T) {
	t.Parallel()
	_, s, lc := setupStore(t)
	ctx := context.Background()
	want := jobs.Limits{MaxFailures: 7, MaxFailureRatio: 0.2, MinSample: 30}
	if _, _, err := lc.Create(ctx, "j1", false, want); err != nil {
		t.Fatal(err)
	}
	if j, err := s.Job(ctx, "j1"); err != nil || j.Limits != want {
		t.Fatalf("limits %+v, %v; want %+v", j.Limits, err, want)
	}
	// Given again on a re-run, they replace the job's.
	want = jobs.Limits{MaxFailureRatio: 0.35, MinSample: 10}
	if _, _, err := lc.Create(ctx, "j1", false, want); err != nil {
		t.Fatal(err)
	}
	if j, err := s.Job(ctx, "j1"); err != nil || j.Limits != want {
		t.Fatalf("limits after re-run %+v, %v; want %+v", j.Limits, err, want)
	}
}
