package dbpool_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/shared/dbpool"
	"github.com/massgov/bulk-user-import/shared/logging"
)

// A server set to log slow statements with their parameters is reported;
// with log_parameter_max_length=0 it is not.
func TestParameterLoggingIsReported(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	db := pgx.Identifier{admin.Config().Database}.Sanitize()
	// Statements slower than 100 s only: nothing is logged in practice.
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+db+" SET log_min_duration_statement = 100000"); err != nil {
		t.Fatal(err)
	}
	check := func(want string) {
		t.Helper()
		pool, err := dbpool.Open(ctx, url, 2, "")
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		got, err := dbpool.ParameterLogging(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		if want == "" && got != "" || !strings.Contains(got, want) {
			t.Fatalf("ParameterLogging = %q, want %q", got, want)
		}
		var buf bytes.Buffer
		log, _ := logging.New(&buf, logging.JSON, "info")
		dbpool.WarnParameterLogging(ctx, pool, log)
		if (buf.Len() > 0) != (want != "") {
			t.Fatalf("warning %q for %q", buf.String(), want)
		}

		// Whatever the server says, a failing statement's parameters are
		// not logged by this pool's sessions.
		var v string
		if err := pool.QueryRow(ctx, "SHOW log_parameter_max_length_on_error").Scan(&v); err != nil || v != "0" {
			t.Fatalf("log_parameter_max_length_on_error = %q, %v", v, err)
		}
	}
	check("log_min_duration_statement=100000ms with log_parameter_max_length=")
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+db+" SET log_parameter_max_length = 0"); err != nil {
		t.Fatal(err)
	}
	check("")
}
