// Package pgtest gives each test package a throw-away PostgreSQL database
// on a real server, created fresh and dropped afterwards.
//
// The server is $TEST_DATABASE_URL, else $DATABASE_URL, else the local
// default postgres://postgres@127.0.0.1:5432/postgres. Databases left by
// killed test runs are swept after two hours.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/localstack/devdb"
	"github.com/massgov/bulk-user-import/shared/jobs"
)

const prefix = "bui_test_"

// ServerURL is the server tests create their databases on.
func ServerURL() string {
	for _, v := range []string{"TEST_DATABASE_URL", "DATABASE_URL"} {
		if u := os.Getenv(v); u != "" {
			return u
		}
	}
	return "postgres://postgres@127.0.0.1:5432/postgres"
}

// NewDatabase creates an empty database and returns its URL. It is dropped
// when the test (or benchmark) ends.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	ctx := context.Background()
	admin, err := adminConn(ctx)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	defer admin.Close(ctx)
	sweep(ctx, admin)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := fmt.Sprintf("%s%d_%s", prefix, time.Now().Unix(), hex.EncodeToString(b))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("pgtest: create database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := adminConn(ctx)
		if err != nil {
			tb.Logf("pgtest: drop %s: %v", name, err)
			return
		}
		defer admin.Close(ctx)
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Logf("pgtest: drop %s: %v", name, err)
		}
	})
	return devdb.WithDatabase(ServerURL(), name)
}

// NewPFMLDatabase creates a database holding the PFML dev schema (no seed)
// and the tool's own tables, and returns a pool on it, closed at the end.
func NewPFMLDatabase(tb testing.TB) (string, *pgxpool.Pool) {
	tb.Helper()
	url := NewDatabase(tb)
	return url, preparePFML(tb, url)
}

// preparePFML applies the PFML dev schema and the tool's migrations to the
// database at url and returns a pool on it, closed at the end of the test.
func preparePFML(tb testing.TB, url string) *pgxpool.Pool {
	tb.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(pool.Close)
	if err := devdb.ApplySchema(ctx, pool); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	if err := jobs.Migrate(ctx, pool); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	return pool
}

func adminConn(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		return nil, fmt.Errorf("connect to the test server %s (start PostgreSQL or set TEST_DATABASE_URL): %w", redacted(), err)
	}
	return conn, nil
}

// sweep drops test databases older than two hours (left by killed runs).
func sweep(ctx context.Context, admin *pgx.Conn) {
	rows, err := admin.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE 'bui\_test\_%'`)
	if err != nil {
		return
	}
	names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	for _, n := range names {
		parts := strings.SplitN(strings.TrimPrefix(n, prefix), "_", 2)
		ts, err := strconv.ParseInt(parts[0], 10, 64)
		if err != nil || time.Since(time.Unix(ts, 0)) < 2*time.Hour {
			continue
		}
		_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+n+" WITH (FORCE)")
	}
}

func redacted() string {
	cfg, err := pgx.ParseConfig(ServerURL())
	if err != nil {
		return "(unparseable URL)"
	}
	return fmt.Sprintf("%s:%d", cfg.Host, cfg.Port)
}

// Count runs a query that returns one number, failing the test on error.
func Count(tb testing.TB, pool *pgxpool.Pool, sql string, args ...any) int {
	tb.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

// Batch sends the statements fn queues in one batch (one implicit
// transaction), as the production code sends them, failing the test on
// error.
func Batch(tb testing.TB, pool *pgxpool.Pool, fn func(b *pgx.Batch)) {
	tb.Helper()
	b := &pgx.Batch{}
	fn(b)
	if err := pool.SendBatch(context.Background(), b).Close(); err != nil {
		tb.Fatal(err)
	}
}
