package jobs_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/shared/csvrows"
	"github.com/massgov/bulk-user-import/shared/jobs"
)

func setup(t *testing.T) (*pgxpool.Pool, *jobs.Store) {
	t.Helper()
	_, pool := pgtest.NewPFMLDatabase(t)
	return pool, jobs.NewStore(pool)
}

func reader(t *testing.T, name, content string) *csvrows.Reader {
	t.Helper()
	r, err := csvrows.NewReader(name, strings.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func record(t *testing.T, s *jobs.Store, job, name, content string) jobs.SourceCounts {
	t.Helper()
	r := reader(t, name, content)
	c, err := s.RecordSource(context.Background(), job, name, r.Header(), r)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMigrateIsIdempotentAndConcurrent(t *testing.T) {
	t.Parallel()
	pool, _ := setup(t)
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

func TestRecordSourceCountsRejectsAndDuplicatesAcrossSources(t *testing.T) {
	t.Parallel()
	_, s := setup(t)
	ctx := context.Background()
	if _, _, err := s.CreateJob(ctx, "j1", false, jobs.Limits{}); err != nil {
		t.Fatal(err)
	}
	c1 := record(t, s, "j1", "a.csv", "fein,email\n123456789,a@b.co\n123456789,A@B.CO\n1x,c@d.co\n987654321,a@b.co\n")
	if c1 != (jobs.SourceCounts{Rows: 4, Accepted: 2, Rejected: 1, Duplicates: 1}) {
		t.Fatalf("first source %+v", c1)
	}
	c2 := record(t, s, "j1", "b.csv", "email,fein\na@b.co,987654321\nnew@b.co,123456789\n")
	if c2 != (jobs.SourceCounts{Rows: 2, Accepted: 1, Duplicates: 1}) {
		t.Fatalf("second source %+v", c2)
	}
	st, err := s.Status(ctx, "j1")
	if err != nil {
		t.Fatal(err)
	}
	want := jobs.Status{Job: "j1", Total: 6, Queued: 3, Rejected: 1, Duplicate: 2, Unsent: 3}
	st.CreatedAt = want.CreatedAt
	if st != want {
		t.Fatalf("status %+v, want %+v", st, want)
	}
	probs, err := s.Problems(ctx, "j1", 10)
	if err != nil || len(probs) != 1 || probs[0].Line != 4 || probs[0].Source != "a.csv" || probs[0].Code != csvrows.CodeInvalidFEIN {
		t.Fatalf("problems %+v, %v", probs, err)
	}
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

func TestRefusedSourceRecordsNothing(t *testing.T) {
	t.Parallel()
	pool, s := setup(t)
	ctx := context.Background()
	if _, _, err := s.CreateJob(ctx, "j1", false, jobs.Limits{}); err != nil {
		t.Fatal(err)
	}
	_, err := s.RecordSource(ctx, "j1", "bad.csv", []string{"fein", "email"}, &failingRows{})
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

func TestCreateJobRefusesAChangedForceFlag(t *testing.T) {
	t.Parallel()
	_, s := setup(t)
	ctx := context.Background()
	if _, created, err := s.CreateJob(ctx, "j1", true, jobs.Limits{}); err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	if _, created, err := s.CreateJob(ctx, "j1", true, jobs.Limits{}); err != nil || created {
		t.Fatalf("re-create: %v %v", created, err)
	}
	if _, _, err := s.CreateJob(ctx, "j1", false, jobs.Limits{}); err == nil {
		t.Fatal("changed force flag accepted")
	}
}

func TestLockIsExclusive(t *testing.T) {
	t.Parallel()
	_, s := setup(t)
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

func TestUnsentRowsAndRowTransitions(t *testing.T) {
	t.Parallel()
	_, s := setup(t)
	ctx := context.Background()
	if _, _, err := s.CreateJob(ctx, "j1", true, jobs.Limits{}); err != nil {
		t.Fatal(err)
	}
	record(t, s, "j1", "a.csv", "fein,email\n1,a@b.co\n2,b@b.co\n3,c@b.co\n")
	page, err := s.UnsentRows(ctx, "j1", 0, 2)
	if err != nil || len(page) != 2 || page[0].Row != 1 || page[0].FEIN != "000000001" {
		t.Fatalf("page %+v, %v", page, err)
	}
	if err := s.MarkSent(ctx, "j1", []int64{1, 2}); err != nil {
		t.Fatal(err)
	}
	page, err = s.UnsentRows(ctx, "j1", 0, 10)
	if err != nil || len(page) != 1 || page[0].Row != 3 {
		t.Fatalf("after marking: %+v, %v", page, err)
	}

	ri, err := s.StartAttempt(ctx, "j1", 1, 2)
	if err != nil || ri.State != jobs.Queued || !ri.ForceRegistration || ri.Email != "a@b.co" || ri.Attempts != 2 {
		t.Fatalf("start: %+v, %v", ri, err)
	}
	if ri, _ := s.StartAttempt(ctx, "j1", 1, 1); ri.Attempts != 2 {
		t.Fatalf("attempts went down to %d", ri.Attempts)
	}
	if _, err := s.StartAttempt(ctx, "j1", 99, 1); !errors.Is(err, jobs.ErrRowNotFound) {
		t.Fatalf("unknown row: %v", err)
	}
	if err := s.NoteError(ctx, "j1", 1, "COGNITO_UNAVAILABLE", "throttled"); err != nil {
		t.Fatal(err)
	}
	if err := s.Succeed(ctx, "j1", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Fail(ctx, "j1", 1, "X", "late failure"); err != nil {
		t.Fatal(err)
	}
	if err := s.Fail(ctx, "j1", 2, "EMPLOYER_NOT_FOUND", "no employer"); err != nil {
		t.Fatal(err)
	}
	st, err := s.Status(ctx, "j1")
	if err != nil || st.Succeeded != 1 || st.Failed != 1 || st.Queued != 1 || st.Unsent != 1 || st.Done() {
		t.Fatalf("status %+v, %v", st, err)
	}
	if ri, _ := s.StartAttempt(ctx, "j1", 1, 3); ri.State != jobs.Succeeded {
		t.Fatalf("a failure overwrote success: %+v", ri)
	}
	if _, err := s.Status(ctx, "nope"); !errors.Is(err, jobs.ErrJobNotFound) {
		t.Fatalf("unknown job: %v", err)
	}
}
