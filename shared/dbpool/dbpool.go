// Package dbpool opens the PostgreSQL connection pool both binaries use.
package dbpool

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Open connects to databaseURL with at most maxConns connections and checks
// the connection. app names the pool's sessions to the server
// (application_name, seen in pg_stat_activity: "bui worker HOST/PID/ID
// rows"; empty: the URL's). Errors name the host and database, never the
// password.
func Open(ctx context.Context, databaseURL string, maxConns int32, app string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", redact(err, databaseURL))
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	if app != "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = AppName(app)
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

// AppName is name as the server keeps an application_name: at most 63
// bytes of printable ASCII (the server truncates longer names and turns
// other bytes into "?"), cut so that its end, which tells two workers
// apart, survives.
func AppName(name string) string {
	b := []byte(name)
	for i, c := range b {
		if c < 32 || c > 126 {
			b[i] = '?'
		}
	}
	if len(b) > maxAppName {
		b = append(b[:maxAppName/2-1:maxAppName/2-1], append([]byte("~"), b[len(b)-(maxAppName-maxAppName/2):]...)...)
	}
	return string(b)
}

// maxAppName is the longest application_name the server keeps
// (NAMEDATALEN - 1).
const maxAppName = 63

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

// ParameterLogging says how the server is set to write statements with
// their parameters (emails, FEINs) to its log in the normal course, not
// only on error: "" when it is not. A session may not change these
// settings (they are the server's, e.g. an RDS parameter group's), so the
// binaries warn at start-up and the README tells what to set.
func ParameterLogging(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	rows, err := pool.Query(ctx, `SELECT name, setting FROM pg_settings WHERE name IN
		('log_statement', 'log_min_duration_statement', 'log_min_duration_sample', 'log_statement_sample_rate',
		 'log_transaction_sample_rate', 'log_parameter_max_length')`)
	if err != nil {
		return "", fmt.Errorf("read the server's log settings: %w", err)
	}
	set := map[string]string{}
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			return "", fmt.Errorf("read the server's log settings: %w", err)
		}
		set[name] = value
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("read the server's log settings: %w", err)
	}
	if set["log_parameter_max_length"] == "0" {
		return "", nil
	}
	var why []string
	if v := set["log_statement"]; v == "mod" || v == "all" {
		why = append(why, "log_statement="+v)
	}
	if v := set["log_min_duration_statement"]; v != "" && v != "-1" {
		why = append(why, "log_min_duration_statement="+v+"ms")
	}
	if v := set["log_min_duration_sample"]; v != "" && v != "-1" && set["log_statement_sample_rate"] != "0" {
		why = append(why, "log_min_duration_sample="+v+"ms")
	}
	if v := set["log_transaction_sample_rate"]; v != "" && v != "0" {
		why = append(why, "log_transaction_sample_rate="+v)
	}
	if len(why) == 0 {
		return "", nil
	}
	return strings.Join(why, ", ") + " with log_parameter_max_length=" + set["log_parameter_max_length"], nil
}

// WarnParameterLogging logs a warning when the server writes statements'
// parameters to its log (see ParameterLogging).
func WarnParameterLogging(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) {
	why, err := ParameterLogging(ctx, pool)
	switch {
	case err != nil:
		log.Debug("could not read the server's log settings", "err", err)
	case why != "":
		log.Warn("the PostgreSQL server writes statements with their parameters to its log ("+why+"): emails and FEINs will be in the server's log; "+
			"set log_parameter_max_length=0 on the server (the RDS parameter group)", "setting", why)
	}
}
