package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

func TestPrivateServerSurvivesARestart(t *testing.T) {
	t.Parallel()
	s := StartServer(t)
	url := s.Database(t, "restart_test")
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE t (x int); INSERT INTO t VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	var n int
	for deadline := time.Now().Add(10 * time.Second); ; {
		err = pool.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n)
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || n != 1 {
		t.Fatalf("after restart: %d rows, %v", n, err)
	}
}
