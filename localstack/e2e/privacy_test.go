package e2e

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cip "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider"
	"github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider/types"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/localstack/fineosstub"
	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/localstack/proctest"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/dbpool"
	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/pfml"
	"github.com/massgov/bulk-user-import/shared/results"
)

// The people of the privacy test: every email and FEIN is distinctive, so
// that finding one in an output is a leak and nothing else.
const (
	feinKnown    = "318274650" // employer known to FINEOS (party 4101)
	feinEcho     = "729104836" // employer whose FINEOS call is refused with an echo (party 4102)
	feinUnknown  = "443322117" // no such employer
	feinInvalid  = "55-1234X67"
	feinHeadless = "941991482"

	emailValid       = "zelda.valid@pii-probe.example"
	emailInvalid     = "yannick.invalid@@pii-probe.example"
	emailBadFEIN     = "wanda.badfein@pii-probe.example"
	emailUnknown     = "victor.unknown@pii-probe.example"
	emailDBConflict  = "ursula.dbconflict@pii-probe.example"
	emailCogConflict = "tess.cognito@pii-probe.example"
	emailEcho        = "sam.echo@pii-probe.example"
	emailHeadless    = "rita.noheader@pii-probe.example"
	emailRaise       = "olga.raise@pii-probe.example"
	emailParam       = "paula.param@pii-probe.example"
	// emailControl goes through a pool without the tool's session settings:
	// the server logs it, which proves the log is searched for real.
	emailControl = "carl.control@pii-probe.example"
)

// secrets are what must never appear in clear: each email's distinctive
// part, and each FEIN as written, as nine digits and as NN-NNNNNNN (the
// masked form keeps only the last four). Shorter pieces of a FEIN are not
// searched: five digits turn up by chance in timestamps, process ids and
// temporary paths.
func secrets() []string {
	var out []string
	for _, e := range []string{emailValid, emailInvalid, emailBadFEIN, emailUnknown, emailDBConflict, emailCogConflict,
		emailEcho, emailHeadless, emailRaise, emailParam} {
		local, _, _ := strings.Cut(e, "@")
		out = append(out, local)
	}
	for _, f := range []string{feinKnown, feinEcho, feinUnknown, feinHeadless} {
		out = append(out, f, f[:2]+"-"+f[2:])
	}
	return append(out, feinInvalid, strings.ReplaceAll(feinInvalid, "-", ""))
}

// leaks returns the secrets found in out, case-insensitively.
func leaks(out string) []string {
	lower := strings.ToLower(out)
	var found []string
	for _, s := range secrets() {
		if strings.Contains(lower, strings.ToLower(s)) {
			found = append(found, s)
		}
	}
	return found
}

// TestNoPersonalDataOutsideItsPlaces imports rows of every kind (valid, an
// invalid email, an invalid FEIN, an unknown employer, email conflicts on
// the database and the Cognito path, a FINEOS rejection that echoes the
// request, a file without a header), runs every command an operator runs,
// and searches all they printed, and the log of the PostgreSQL server, for
// the emails and FEINs in clear. Only the result files may hold them.
func TestNoPersonalDataOutsideItsPlaces(t *testing.T) {
	t.Parallel()
	// A server set to log what an unwary RDS parameter group logs: every
	// error with its statement, its full parameters and its detail.
	pg := pgtest.StartServer(t, "log_parameter_max_length_on_error=-1", "log_error_verbosity=verbose",
		"log_min_error_statement=error", "log_connections=on")
	s := stacktest.New(t, stacktest.Options{MaxReceiveCount: 2, Postgres: pg})
	s.AddEmployer(t, feinKnown, 4101)
	echoEmployer := s.AddEmployer(t, feinEcho, 4102)
	ctx := context.Background()

	// The database path: a user row holds the email without a Cognito sub.
	// The Cognito path: the user row and the Cognito user have different subs.
	if _, err := s.Pool.Exec(ctx, `INSERT INTO "user" (user_id, email_address) VALUES (gen_random_uuid(), $1)`, emailDBConflict); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool.Exec(ctx, `INSERT INTO "user" (user_id, sub_id, email_address) VALUES (gen_random_uuid(), 'sub-of-someone-else', $1)`, emailCogConflict); err != nil {
		t.Fatal(err)
	}
	if _, err := awsconf.Cognito(s.AWS).AdminCreateUser(ctx, &cip.AdminCreateUserInput{
		UserPoolId: &s.Resources.UserPoolID, Username: aws.String(emailCogConflict), MessageAction: types.MessageActionTypeSuppress,
		UserAttributes: []types.AttributeType{{Name: aws.String("email"), Value: aws.String(emailCogConflict)}},
	}); err != nil {
		t.Fatal(err)
	}
	// FINEOS refuses the echo row's call and repeats the request in its answer.
	s.Fineos.InjectFaults(fineosstub.Fault{Status: http.StatusUnprocessableEntity, Echo: true, Email: emailEcho})

	dir := t.TempDir()
	admins := filepath.Join(dir, "admins.csv")
	headless := filepath.Join(dir, "headless.csv")
	rows := strings.Join([]string{
		"fein,email",
		feinKnown + "," + emailValid,
		feinKnown + "," + emailInvalid,
		feinInvalid + "," + emailBadFEIN,
		feinUnknown + "," + emailUnknown,
		feinKnown + "," + emailDBConflict,
		feinKnown + "," + emailCogConflict,
		feinEcho + "," + emailEcho,
	}, "\n") + "\n"
	if err := os.WriteFile(admins, []byte(rows), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(headless, []byte(emailHeadless+","+feinHeadless+"\n"+feinKnown+","+emailValid+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	var outputs []string // everything the processes printed, by label
	record := func(label, out string) { outputs = append(outputs, "== "+label+"\n"+out) }
	envv := env(s)
	w1, w2 := startWorker(t, envv), startWorker(t, envv)

	r := runBin(t, envv, "splitter", "--dry-run", admins, headless)
	record("splitter --dry-run", r.Stdout+r.Stderr)
	for _, want := range []string{"REFUSED", "2 fields, none named fein or email", "INVALID_EMAIL", "INVALID_FEIN"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("dry run lacks %q:\n%s", want, r.Stdout)
		}
	}

	r = runBin(t, envv, "splitter", "--force-registration", "--wait", "--poll-interval", "200ms", "--job", "privacy-1", admins, headless)
	record("splitter --wait", r.Stdout+r.Stderr)
	if r.Code != 1 {
		t.Fatalf("splitter exit %d, want 1 (a file refused)\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, want := range []string{"7 rows: 1 succeeded, 4 failed, 2 rejected", "EMPLOYER_NOT_FOUND", "EMAIL_CONFLICT", "FINEOS_REJECTED", "VALIDATION_ERROR"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, r.Stdout)
		}
	}

	for _, args := range [][]string{{"splitter", "status", "privacy-1"}, {"splitter", "status", "privacy-1", "--json"},
		{"worker", "dlq", "list"}, {"worker", "dlq", "list", "--json"}, {"worker", "dlq", "replay", "--dry-run"},
		{"splitter", "report", "privacy-1", "--out", filepath.Join(dir, "report")}} {
		r := runBin(t, envv, args[0], args[1:]...)
		record(strings.Join(args, " "), r.Stdout+r.Stderr)
		if r.Code != 0 && r.Code != 3 {
			t.Errorf("%v: exit %d\n%s\n%s", args, r.Code, r.Stdout, r.Stderr)
		}
	}
	// A failed row is final once claimed; its dead letter follows within
	// moments.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		n := dlqCounts(t, envv)
		if n["EMPLOYER_NOT_FOUND"] == 1 && n["EMAIL_CONFLICT"] == 2 && n["FINEOS_REJECTED"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters by code: %v", n)
		}
	}

	// The conflict that only the database sees (a row taking the email
	// between the look-up and the insert) raises an error there; and a
	// failing statement carrying an email, through the tool's pool.
	raiseConflictAndFailAStatement(t, s, echoEmployer)

	for _, w := range []*proctest.Proc{w1, w2} {
		if _, stopped, err := w.Stop(30 * time.Second); !stopped || err != nil {
			t.Fatalf("worker did not stop: %v", err)
		}
		record("worker", w.Output())
		checkStrictJSON(t, w.Output())
	}

	serverLog, err := pg.Log()
	if err != nil {
		t.Fatal(err)
	}
	// The log is really searched: the control statement's parameters and
	// the database's conflict error are in it.
	if !strings.Contains(string(serverLog), emailControl) || !strings.Contains(string(serverLog), "the email is held by another user row") {
		t.Fatalf("the server log lacks the control statement or the conflict error:\n%s", serverLog)
	}
	record("postgresql server log", string(serverLog))

	for _, out := range outputs {
		label, _, _ := strings.Cut(out, "\n")
		if found := leaks(out); len(found) > 0 {
			t.Errorf("%s: personal data in clear: %v\n%s", label, found, out)
		}
	}

	// The result files are where the data belongs: the failed rows are there in full.
	failed, err := os.ReadFile(filepath.Join(dir, "report", results.FileFailed))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []string{emailUnknown, emailDBConflict, emailCogConflict, emailEcho, emailInvalid, feinUnknown} {
		if !strings.Contains(string(failed), e) {
			t.Errorf("%s lacks %s:\n%s", results.FileFailed, e, failed)
		}
	}
	if len(leaks(string(failed))) == 0 {
		t.Fatal("the search finds nothing in the result file: it cannot find a leak either")
	}
}

// raiseConflictAndFailAStatement exercises the server-side paths: the
// email-held exception (a user row holding the email under another sub)
// and a failing statement whose parameter is an email, through a pool of
// the tool's (dbpool.Open) and, as the control, a plain pool.
func raiseConflictAndFailAStatement(t *testing.T, s *stacktest.Stack, employerID string) {
	t.Helper()
	ctx := context.Background()
	pool, err := dbpool.Open(ctx, s.DatabaseURL, 2, "")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `INSERT INTO "user" (user_id, sub_id, email_address) VALUES (gen_random_uuid(), 'sub-olga-first', $1)`, emailRaise); err != nil {
		t.Fatal(err)
	}
	store, err := pfml.NewStore(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	b := &pgx.Batch{}
	store.QueueEnsureLeaveAdmin(b, "sub-olga-second", emailRaise, employerID)
	if err := store.Send(ctx, b); !errors.Is(err, pfml.ErrEmailHeld) {
		t.Fatalf("want ErrEmailHeld, got %v", err)
	}
	if _, err := pool.Exec(ctx, `SELECT 1 / (length($1::text) - length($1::text))`, emailParam); err == nil {
		t.Fatal("the division by zero succeeded")
	}
	plain, err := pgxpool.New(ctx, s.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.Exec(ctx, `SELECT 1 / (length($1::text) - length($1::text))`, emailControl); err == nil {
		t.Fatal("the division by zero succeeded")
	}
}

// checkStrictJSON parses every line of a JSON log strictly: one object
// per line, no key twice.
func checkStrictJSON(t *testing.T, out string) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		n++
		if err := logging.StrictJSON(line); err != nil {
			t.Errorf("log line %d: %v: %s", n, err, line)
		}
	}
	if n == 0 {
		t.Error("the worker logged nothing")
	}
}
