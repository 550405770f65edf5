package pfml_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

func lookup(t *testing.T, s *pfml.Store, email, fein string, plan bool) *pfml.Lookup {
	t.Helper()
	b := &pgx.Batch{}
	l := s.QueueLookup(b, email, fein, plan)
	if err := s.Send(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	return l
}

func ensure(s *pfml.Store, sub, email, employerID string) (*pfml.LeaveAdmin, error) {
	b := &pgx.Batch{}
	la := s.QueueEnsureLeaveAdmin(b, sub, email, employerID)
	return la, s.Send(context.Background(), b)
}

func TestLookupFindsTheEmployerAndPlansTheWebIDOnce(t *testing.T) {
	t.Parallel()
	pool, s := setup(t)
	ctx := context.Background()
	l := lookup(t, s, "a@b.co", "123456789", true)
	e, err := l.Employer()
	if err != nil || e.ID != emp1 || e.FineosEmployerID == nil || *e.FineosEmployerID != 1001 {
		t.Fatalf("employer %+v, %v", e, err)
	}
	if !strings.HasPrefix(l.PlannedID, pfml.FineosWebIDPrefix) {
		t.Fatalf("planned id %q", l.PlannedID)
	}
	// Concurrent lookups of the pair all get the same web id.
	var wg sync.WaitGroup
	ids := make([]string, 12)
	for i := range ids {
		wg.Go(func() { ids[i] = lookup(t, s, "race@b.co", "123456789", true).PlannedID })
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] || id == "" {
			t.Fatalf("web ids %v", ids)
		}
	}
	// No plan for an employer FINEOS does not know, nor without planning.
	if l := lookup(t, s, "a@b.co", "987654321", true); l.PlannedID != "" {
		t.Fatalf("planned %q for an employer without fineos_employer_id", l.PlannedID)
	}
	if l := lookup(t, s, "other@b.co", "123456789", false); l.PlannedID != "" {
		t.Fatal("planned without being asked")
	}
	if _, err := lookup(t, s, "a@b.co", "000000000", true).Employer(); !errors.Is(err, pfml.ErrEmployerNotFound) {
		t.Fatalf("unknown FEIN: %v", err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO employer (employer_id, employer_fein) VALUES (gen_random_uuid(), '987654321')`); err != nil {
		t.Fatal(err)
	}
	if _, err := lookup(t, s, "a@b.co", "987654321", false).Employer(); !errors.Is(err, pfml.ErrEmployerAmbiguous) {
		t.Fatalf("ambiguous FEIN: %v", err)
	}
}

func TestEnsureLeaveAdminConcurrentlyCreatesEachThingOnce(t *testing.T) {
	t.Parallel()
	pool, s := setup(t)
	const workers = 16
	results := make([]*pfml.LeaveAdmin, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			emp := emp1
			if i%2 == 1 {
				emp = emp2
			}
			results[i], errs[i] = ensure(s, "sub-1", "a@b.co", emp)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("worker %d: %v", i, err)
		}
		if r := results[i]; r.UserID != results[0].UserID || r.LinkID == "" || r.FineosWebID != "" {
			t.Fatalf("worker %d: %+v", i, r)
		}
	}
	if n := pgtest.Count(t, pool, `SELECT count(*) FROM "user" WHERE email_address = 'a@b.co' AND sub_id = 'sub-1' AND created_at IS NOT NULL`); n != 1 {
		t.Fatalf("%d users", n)
	}
	if n := pgtest.Count(t, pool, `SELECT count(*) FROM link_user_role WHERE role_id = 3`); n != 1 {
		t.Fatalf("%d role links", n)
	}
	if n := pgtest.Count(t, pool, `SELECT count(*) FROM link_user_leave_administrator`); n != 2 {
		t.Fatalf("%d leave admin links, want 2", n)
	}
}

func TestFineosWebIDIsRecordedOnceAndThenSeenOnTheLink(t *testing.T) {
	t.Parallel()
	pool, s := setup(t)
	ctx := context.Background()
	planned := lookup(t, s, "a@b.co", "123456789", true).PlannedID
	if _, err := ensure(s, "sub-1", "a@b.co", emp1); err != nil {
		t.Fatal(err)
	}
	record := func(id string) {
		b := &pgx.Batch{}
		s.QueueRecordFineosWebID(b, "sub-1", "a@b.co", emp1, id)
		if err := s.Send(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	record(planned)
	record("pfml_leave_admin_other") // never overwrites the first
	la, err := ensure(s, "sub-1", "a@b.co", emp1)
	if err != nil || la.FineosWebID != planned {
		t.Fatalf("link %+v, %v (planned %s)", la, err, planned)
	}
	if n := pgtest.Count(t, pool, `SELECT count(*) FROM bulk_import_fineos_plan WHERE registered_at IS NOT NULL`); n != 1 {
		t.Fatalf("%d plans registered", n)
	}
}

func TestEmailHeldByAnotherUserIsAConflictAndTheBatchWritesNothing(t *testing.T) {
	t.Parallel()
	pool, s := setup(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO "user" (user_id, sub_id, email_address) VALUES (gen_random_uuid(), 'other-sub', 'a@b.co')`); err != nil {
		t.Fatal(err)
	}
	b := &pgx.Batch{}
	b.Queue(`UPDATE employer SET employer_name = 'touched' WHERE employer_id = $1`, emp1) // before: rolled back too
	s.QueueEnsureLeaveAdmin(b, "sub-1", "a@b.co", emp1)
	err := s.Send(ctx, b)
	// The server's error names no email (the server logs it): the caller,
	// who knows the email, asks which row holds it.
	var pe *pgconn.PgError
	if !errors.Is(err, pfml.ErrEmailHeld) || !errors.As(err, &pe) || strings.Contains(pe.Error(), "a@b.co") {
		t.Fatalf("err = %v, want ErrEmailHeld without the email", err)
	}
	err = s.EmailConflict(ctx, "a@b.co")
	var ce *pfml.EmailConflictError
	if !errors.As(err, &ce) || !ce.HasSub || ce.UserID == "" {
		t.Fatalf("err = %v, want EmailConflictError", err)
	}
	if strings.Contains(err.Error(), "a@b.co") {
		t.Fatalf("error leaks the email: %v", err)
	}
	if n := pgtest.Count(t, pool, `SELECT (SELECT count(*) FROM link_user_role) + (SELECT count(*) FROM link_user_leave_administrator)
		+ (SELECT count(*) FROM employer WHERE employer_name = 'touched')`); n != 0 {
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
	if !errors.Is(err, pfml.ErrSchema) || !strings.Contains(err.Error(), "employer.fineos_employer_id") || !strings.Contains(err.Error(), "user.sub_id") {
		t.Fatalf("err = %v", err)
	}
}

func TestCheckWritableNamesMissingPrivileges(t *testing.T) {
	t.Parallel()
	url, pool := pgtest.NewPFMLDatabase(t)
	ctx := context.Background()
	store, err := pfml.NewStore(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CheckWritable(ctx); err != nil {
		t.Fatalf("owner: %v", err)
	}
	// A user that may read but not write the PFML tables.
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	role := "bui_reader_" + hex.EncodeToString(b)
	for _, q := range []string{
		`CREATE ROLE ` + role + ` LOGIN`,
		`GRANT SELECT ON ALL TABLES IN SCHEMA public TO ` + role,
		`GRANT SELECT, INSERT, UPDATE ON bulk_import_row TO ` + role,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), `DROP OWNED BY `+role)
		_, _ = pool.Exec(context.Background(), `DROP ROLE `+role)
	})
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.User = role
	reader, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	rstore, err := pfml.NewStore(ctx, reader)
	if err != nil {
		t.Fatal(err)
	}
	var who string
	_ = reader.QueryRow(ctx, "select current_user").Scan(&who)
	err = rstore.CheckWritable(ctx)
	if err == nil || !strings.Contains(err.Error(), `INSERT on "user"`) || strings.Contains(err.Error(), "SELECT on \"user\"") || !strings.Contains(err.Error(), "link_user_leave_administrator") {
		t.Fatalf("reader %s: %v", who, err)
	}
	// A read-only session.
	cfg, _ = pgxpool.ParseConfig(url)
	cfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	ro, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	rostore, err := pfml.NewStore(ctx, ro)
	if err != nil {
		t.Fatal(err)
	}
	if err := rostore.CheckWritable(ctx); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("read-only: %v", err)
	}
}
