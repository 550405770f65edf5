package plan_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/cognito"
	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/plan"
	"github.com/massgov/bulk-user-import/shared/register"
	"github.com/massgov/bulk-user-import/shared/source"
)

func setup(t *testing.T) (*stacktest.Stack, *plan.Planner) {
	t.Helper()
	s := stacktest.New(t, stacktest.Options{})
	return s, &plan.Planner{Opener: source.Opener{}, DB: s.Pool, Cognito: cognito.New(awsconf.Cognito(s.AWS), s.Resources.UserPoolID)}
}

func writeCSV(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "rows.csv")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadOnlyRefusesWrites(t *testing.T) {
	t.Parallel()
	s, _ := setup(t)
	ctx := context.Background()
	err := plan.ReadOnly(ctx, s.Pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO employer (employer_id, employer_fein) VALUES (gen_random_uuid(), '100000001')`)
		return err
	})
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "25006" {
		t.Fatalf("a write in the plan's transaction: %v, want SQLSTATE 25006", err)
	}
}

// A Cognito user whose PFML row holds another spelling of the email: the
// registration links that row (found by sub), and so does the plan.
func TestPlanFindsTheUserRowByItsCognitoSub(t *testing.T) {
	t.Parallel()
	s, p := setup(t)
	ctx := context.Background()
	empID := s.AddEmployer(t, "200000002", 7001)
	const email = "quentin.sub@plan-unit.example"
	u, err := cognito.New(awsconf.Cognito(s.AWS), s.Resources.UserPoolID).EnsureUser(ctx, email, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool.Exec(ctx, `WITH u AS (INSERT INTO "user" (user_id, sub_id, email_address) VALUES (gen_random_uuid(), $1, 'old.spelling@plan-unit.example') RETURNING user_id)
		INSERT INTO link_user_leave_administrator (user_leave_administrator_id, user_id, employer_id) SELECT gen_random_uuid(), user_id, $2 FROM u`, u.Sub, empID); err != nil {
		t.Fatal(err)
	}
	rep, err := p.Plan(ctx, plan.Options{Sources: []string{writeCSV(t, "fein,email\n200000002,"+email+"\n")}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.CognitoExisting != 1 || rep.PFMLUsersExisting != 1 || rep.LinksExisting != 1 || rep.LinksNew != 0 || rep.WouldSucceed != 1 {
		t.Fatalf("plan: %+v", rep)
	}
	// The registration agrees: no user, no link is added.
	if _, err := s.Registrar(t).Register(ctx, logging.Discard(), register.Request{Email: email, FEIN: "200000002"}); err != nil {
		t.Fatal(err)
	}
	var users, links int
	if err := s.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM "user"), (SELECT count(*) FROM link_user_leave_administrator)`).Scan(&users, &links); err != nil {
		t.Fatal(err)
	}
	if users != 1 || links != 1 {
		t.Fatalf("after the import: %d users, %d links", users, links)
	}
}

func TestPlanCapsTheLinesItLists(t *testing.T) {
	t.Parallel()
	_, p := setup(t)
	var b strings.Builder
	b.WriteString("fein,email\n")
	for i := range 30 {
		fmt.Fprintf(&b, "300000003,person%d@plan-unit.example\n", i)
	}
	rep, err := p.Plan(context.Background(), plan.Options{Sources: []string{writeCSV(t, b.String())}, MaxLines: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Employers) != 1 || rep.Employers[0].Rows != 30 || len(rep.Employers[0].Lines.Lines) != 5 || rep.Employers[0].More != 25 ||
		!strings.HasSuffix(rep.Employers[0].Lines.Lines[4], ":6") {
		t.Fatalf("employers: %+v", rep.Employers)
	}
	if rep.WouldFail != 30 || rep.CognitoLookups != 0 || rep.CognitoNotReached != 30 {
		t.Fatalf("plan: %+v", rep)
	}
}
