package dbpool_test

import (
	"context"
	"testing"

	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/shared/dbpool"
)

func TestCheckHeadroomCountsOthersConnections(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	pool, err := dbpool.Open(ctx, url, 4, "")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	before, err := dbpool.CheckHeadroom(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if before.MaxConnections <= 0 || before.Reserved < 0 || before.InUse < 0 {
		t.Fatalf("headroom %+v", before)
	}

	// Another pool's connections count as in use; this pool's own do not.
	other, err := dbpool.Open(ctx, url, 3, "")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conns := make([]interface{ Release() }, 0, 3)
	for range 3 {
		c, err := other.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	after, err := dbpool.CheckHeadroom(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	// Other tests may open and close connections meanwhile: at least
	// the 3 held here are counted.
	if after.InUse < 3 {
		t.Errorf("in use %d with 3 connections held by another pool (before: %d)", after.InUse, before.InUse)
	}
	free := after.MaxConnections - after.Reserved - after.InUse
	if !after.Fits(free) || after.Fits(free+1) {
		t.Errorf("Fits: %d free of %+v", free, after)
	}
}
