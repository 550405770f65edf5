// Package dbpool opens the PostgreSQL connection pool both binaries use.
package dbpool

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Open connects to databaseURL with at most maxConns connections and checks
// the connection. Errors name the host and database, never the password.
func Open(ctx context.Context, databaseURL string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", redact(err, databaseURL))
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	// The statements carry emails and FEINs as parameters: the server must
	// not copy them into its log when a statement fails, whatever its
	// configuration says (a setting each session may choose).
	cfg.ConnConfig.RuntimeParams["log_parameter_max_length_on_error"] = "0"
	cfg.MaxConnIdleTime = 5 * time.Minute
	cfg.HealthCheckPeriod = 15 * time.Second
	where := fmt.Sprintf("%s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", where, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database %s: %w", where, err)
	}
	return pool, nil
}

// redact keeps a parse error from echoing a password that the URL holds.
func redact(err error, raw string) error {
	u, perr := url.Parse(raw)
	if perr != nil || u.User == nil {
		return fmt.Errorf("cannot parse the connection string")
	}
	if _, has := u.User.Password(); has {
		return fmt.Errorf("cannot parse the connection string for user %s", u.User.Username())
	}
	return err
}
