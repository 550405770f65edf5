package jobs

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLock is the advisory lock key that serialises migrations when
// several workers start at once.
const migrationLock = 0x62756c6b696d70 // "bulkimp"

// Migrate brings the tool's own tables up to date: it applies, in order,
// every migration not recorded as applied (not only those above the
// highest applied: two branches that each added one both get theirs). It
// is safe to call from many processes at once: one migrates, the others
// wait and find it done.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	sort.Strings(files)
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
			return fmt.Errorf("migrate: lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS bulk_import_schema_version (
			version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("migrate: version table: %w", err)
		}
		rows, err := tx.Query(ctx, `SELECT version FROM bulk_import_schema_version`)
		if err != nil {
			return fmt.Errorf("migrate: read versions: %w", err)
		}
		versions, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			return fmt.Errorf("migrate: read versions: %w", err)
		}
		applied := map[int]bool{}
		for _, v := range versions {
			applied[v] = true
		}
		for _, f := range files {
			base := f[strings.LastIndexByte(f, '/')+1:]
			version, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
			if err != nil {
				return fmt.Errorf("migrate: file %s has no version prefix", base)
			}
			if applied[version] {
				continue
			}
			sql, err := migrations.ReadFile(f)
			if err != nil {
				return fmt.Errorf("migrate: %w", err)
			}
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return fmt.Errorf("migrate: apply %s: %w", base, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO bulk_import_schema_version (version) VALUES ($1)`, version); err != nil {
				return fmt.Errorf("migrate: record %s: %w", base, err)
			}
		}
		return nil
	})
}
