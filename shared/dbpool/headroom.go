package dbpool

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Headroom is the server's connection limit and how much of it is taken.
type Headroom struct {
	MaxConnections int // max_connections
	Reserved       int // superuser_reserved_connections + reserved_connections
	InUse          int // connections open now, other than this pool's
}

// Fits tells whether a pool of conns connections can open them all.
func (h Headroom) Fits(conns int) bool {
	return conns <= h.MaxConnections-h.Reserved-h.InUse
}

// CheckHeadroom reads the server's connection limit and the connections
// open now, not counting those of pool and others (one process's pools).
func CheckHeadroom(ctx context.Context, pool *pgxpool.Pool, others ...*pgxpool.Pool) (Headroom, error) {
	var h Headroom
	err := pool.QueryRow(ctx, `SELECT current_setting('max_connections')::int,
		current_setting('superuser_reserved_connections')::int + coalesce(current_setting('reserved_connections', true), '0')::int,
		(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int`).Scan(&h.MaxConnections, &h.Reserved, &h.InUse)
	if err != nil {
		return h, fmt.Errorf("read max_connections: %w", err)
	}
	for _, p := range append([]*pgxpool.Pool{pool}, others...) {
		h.InUse -= int(p.Stat().TotalConns())
	}
	h.InUse = max(h.InUse, 0)
	return h, nil
}
