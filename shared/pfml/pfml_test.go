package pfml_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/shared/pfml"
)

const (
	emp1 = "b0000000-0000-4000-8000-000000000001"
	emp2 = "b0000000-0000-4000-8000-000000000002"
)

func setup(t *testing.T) (*pgxpool.Pool, *pfml.Store) {
	t.Helper()
	_, pool := pgtest.NewPFMLDatabase(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO employer (employer_id, employer_fein, fineos_employer_id) VALUES
		($1, '123456789', 1001), ($2, '987654321', NULL)`, emp1, emp2); err != nil {
		t.Fatal(err)
	}
	s, err := pfml.NewStore(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	return pool, s
}

func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEmployerByFEIN(t *testing.T) {
	t.Parallel()
	pool, s := setup(t)
	ctx := context.Background()
	e, err := s.EmployerByFEIN(ctx, "123456789")
	if err != nil || e.ID != emp1 || e.FineosEmployerID == nil || *e.FineosEmployerID != 1001 {
		t.Fatalf("got %+v, %v", e, err)
	}
	e, err = s.EmployerByFEIN(ctx, "987654321")
	if err != nil || e.FineosEmployerID != nil {
		t.Fatalf("got %+v, %v", e, err)
	}
	if _, err := s.EmployerByFEIN(ctx, "000000000"); !errors.Is(err, pfml.ErrEmployerNotFound) {
		t.Fatalf("err = %v", err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO employer (employer_id, employer_fein) VALUES (gen_random_uuid(), '987654321')`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.EmployerByFEIN(ctx, "987654321"); !errors.Is(err, pfml.ErrEmployerAmbiguous) {
		t.Fatalf("err = %v", err)
	}
}

func TestEnsureLeaveAdminConcurrentlyCreatesEachThingOnce(t *testing.T) {
	t.Parallel()
	pool, s := setup(t)
	ctx := context.Background()
	const workers = 16
	results := make([]pfml.LeaveAdmin, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			emp := emp1
			if i%2 == 1 {
				emp = emp2
			}
			results[i], errs[i] = s.EnsureLeaveAdmin(ctx, "sub-1", "a@b.co", emp, true)
		})
	}
	wg.Wait()
	planned := map[string]string{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("worker %d: %v", i, err)
		}
		r := results[i]
		if r.UserID != results[0].UserID || r.LinkID == "" || r.FineosWebID != "" {
			t.Fatalf("worker %d: %+v", i, r)
		}
		if !strings.HasPrefix(r.PlannedID, pfml.FineosWebIDPrefix) {
			t.Fatalf("worker %d: planned id %q", i, r.PlannedID)
		}
		if p, ok := planned[r.EmployerID]; ok && p != r.PlannedID {
			t.Fatalf("two web ids for one pair: %s and %s", p, r.PlannedID)
		}
		planned[r.EmployerID] = r.PlannedID
	}
	if n := count(t, pool, `SELECT count(*) FROM "user"`); n != 1 {
		t.Fatalf("%d users", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM link_user_role WHERE role_id = 3`); n != 1 {
		t.Fatalf("%d role links", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM link_user_leave_administrator`); n != 2 {
		t.Fatalf("%d leave admin links, want 2", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM "user" WHERE created_at IS NOT NULL AND email_address = 'a@b.co' AND sub_id = 'sub-1'`); n != 1 {
		t.Fatalf("user row not as expected")
	}
}

func TestFineosWebIDIsRecordedOnceAndThenReused(t *testing.T) {
	t.Parallel()
	pool, s := setup(t)
	ctx := context.Background()
	la, err := s.EnsureLeaveAdmin(ctx, "sub-1", "a@b.co", emp1, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RecordFineosWebID(ctx, la.UserID, emp1, la.PlannedID); err != nil {
		t.Fatal(err)
	}
	again, err := s.EnsureLeaveAdmin(ctx, "sub-1", "a@b.co", emp1, true)
	if err != nil {
		t.Fatal(err)
	}
	if again.FineosWebID != la.PlannedID || again.PlannedID != "" {
		t.Fatalf("after registration: %+v (planned was %s)", again, la.PlannedID)
	}
	// A second record never overwrites the first web id.
	if err := s.RecordFineosWebID(ctx, la.UserID, emp1, "pfml_leave_admin_other"); err != nil {
		t.Fatal(err)
	}
	if n := count(t, pool, `SELECT count(*) FROM link_user_leave_administrator WHERE fineos_web_id = $1`, la.PlannedID); n != 1 {
		t.Fatal("web id overwritten")
	}
}

func TestExistingLinkWebIDIsKept(t *testing.T) {
	t.Parallel()
	pool, s := setup(t)
	ctx := context.Background()
	if _, err := s.EnsureLeaveAdmin(ctx, "sub-1", "a@b.co", emp1, false); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE link_user_leave_administrator SET fineos_web_id = 'pfml_leave_admin_existing'`); err != nil {
		t.Fatal(err)
	}
	la, err := s.EnsureLeaveAdmin(ctx, "sub-1", "a@b.co", emp1, true)
	if err != nil || la.FineosWebID != "pfml_leave_admin_existing" || la.PlannedID != "" {
		t.Fatalf("got %+v, %v", la, err)
	}
	if n := count(t, pool, `SELECT count(*) FROM bulk_import_fineos_user`); n != 0 {
		t.Fatalf("planned a web id for a registered pair")
	}
}

func TestEmailHeldByAnotherUserIsAConflictAndWritesNothing(t *testing.T) {
	t.Parallel()
	pool, s := setup(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO "user" (user_id, sub_id, email_address) VALUES (gen_random_uuid(), 'other-sub', 'a@b.co')`); err != nil {
		t.Fatal(err)
	}
	_, err := s.EnsureLeaveAdmin(ctx, "sub-1", "a@b.co", emp1, true)
	var ce *pfml.EmailConflictError
	if !errors.As(err, &ce) || !ce.HasSub || ce.Sub != "sub-1" {
		t.Fatalf("err = %v, want EmailConflictError", err)
	}
	if strings.Contains(err.Error(), "a@b.co") {
		t.Fatalf("error leaks the email: %v", err)
	}
	if n := count(t, pool, `SELECT (SELECT count(*) FROM link_user_role) + (SELECT count(*) FROM link_user_leave_administrator) + (SELECT count(*) FROM bulk_import_fineos_user)`); n != 0 {
		t.Fatalf("%d rows written", n)
	}
}

func TestNewStoreNamesMissingColumns(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE employer (employer_id uuid, employer_fein text)`); err != nil {
		t.Fatal(err)
	}
	_, err = pfml.NewStore(ctx, pool)
	if err == nil || !strings.Contains(err.Error(), "employer.fineos_employer_id") || !strings.Contains(err.Error(), "user.sub_id") {
		t.Fatalf("err = %v", err)
	}
}
