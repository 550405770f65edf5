// Package devdb prepares a PostgreSQL database for development and tests:
// it creates the database if needed and applies the PFML tables the import
// uses, plus a seed of sample employers. Production never runs it.
package devdb

import (
	"context"
	_ "embed"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed schema.sql
var schemaSQL string

//go:embed seed.sql
var seedSQL string

// ApplySchema creates the PFML tables if they do not exist.
func ApplySchema(ctx context.Context, pool *pgxpool.Pool) error {
	if _, err := pool.Exec(ctx, schemaSQL); err != nil {
		return fmt.Errorf("apply PFML dev schema: %w", err)
	}
	return nil
}

// Seed inserts the sample employers if they are missing.
func Seed(ctx context.Context, pool *pgxpool.Pool) error {
	if _, err := pool.Exec(ctx, seedSQL); err != nil {
		return fmt.Errorf("seed sample employers: %w", err)
	}
	return nil
}

// EnsureDatabase creates the database named in databaseURL if it does not
// exist, connecting to the server's postgres database to do so.
func EnsureDatabase(ctx context.Context, databaseURL string) error {
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return fmt.Errorf("database URL: %w", err)
	}
	name := cfg.Database
	if name == "" {
		return fmt.Errorf("database URL names no database")
	}
	cfg.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to %s:%d: %w", cfg.Host, cfg.Port, err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("look for database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// WithDatabase replaces the database of a URL or key=value connection
// string with name.
func WithDatabase(conn, name string) string {
	if strings.HasPrefix(conn, "postgres://") || strings.HasPrefix(conn, "postgresql://") {
		base, query, _ := strings.Cut(conn, "?")
		schemeEnd := strings.Index(base, "://") + 3
		if slash := strings.IndexByte(base[schemeEnd:], '/'); slash >= 0 {
			base = base[:schemeEnd+slash]
		}
		u := base + "/" + name
		if query != "" {
			u += "?" + query
		}
		return u
	}
	return conn + " dbname=" + name
}
