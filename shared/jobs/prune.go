package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// PruneCandidates returns up to limit jobs whose completion was recorded
// more than age ago and whose row data is still there, oldest first.
func (s *Store) PruneCandidates(ctx context.Context, age time.Duration, limit int) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT job_id FROM bulk_import_job j
		WHERE finished_at < now() - $1 * interval '1 second'
		  AND (pruned_at IS NULL OR EXISTS (SELECT 1 FROM bulk_import_row r WHERE r.job_id = j.job_id))
		ORDER BY finished_at LIMIT $2`, age.Seconds(), limit)
	if err != nil {
		return nil, fmt.Errorf("find jobs past retention: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("find jobs past retention: %w", err)
	}
	return ids, nil
}
