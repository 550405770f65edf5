// Package e2e runs the real splitter and worker binaries against the
// embedded local stack and checks every system they write to.
package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cip "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider"

	"github.com/massgov/bulk-user-import/localstack/proctest"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/message"
	"github.com/massgov/bulk-user-import/shared/queue"
)

var binDir string

func TestMain(m *testing.M) { os.Exit(proctest.Main(m, &binDir, "splitter", "worker")) }

func env(s *stacktest.Stack, extra ...string) []string {
	return proctest.Env(s.Env(), append([]string{"LOG_FORMAT=json"}, extra...)...)
}

func runBin(t *testing.T, envv []string, name string, args ...string) proctest.Result {
	t.Helper()
	return proctest.Run(t, filepath.Join(binDir, name), envv, args...)
}

// startWorker starts a worker with quick timings, stopped at the end of the test.
func startWorker(t *testing.T, envv []string, args ...string) *proctest.Proc {
	t.Helper()
	args = append([]string{"--wait-time", "1s", "--retry-base", "1s", "--retry-max", "2s", "--concurrency", "4",
		"--maintain-interval", "250ms", "--leader-lease", "3s", "--breaker-probe-max", "4s"}, args...)
	p, err := proctest.Start(filepath.Join(binDir, "worker"), envv, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, stopped, _ := p.Stop(40 * time.Second); !stopped {
			t.Errorf("worker did not stop within 40s of SIGTERM")
		}
		if t.Failed() {
			t.Logf("worker log:\n%s", p.Output())
		}
	})
	return p
}

const scenario = `FEIN,Email,Name
12-3456789,Alice@Example.com,Alice
987654321,alice@example.com,Alice again: second employer
123456789,bob@example.com,Bob
123456789,ALICE@example.com,Alice: duplicate of line 2
000000001,carol@example.com,Carol: unknown FEIN
123456789,not an email,Dan: invalid email
`

func TestImportEndToEnd(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{MaxReceiveCount: 3})
	s.AddEmployer(t, "123456789", 1001)
	s.AddEmployer(t, "987654321", 1002)
	envv := env(s)
	csv := filepath.Join(t.TempDir(), "admins.csv")
	if err := os.WriteFile(csv, []byte(scenario), 0o600); err != nil {
		t.Fatal(err)
	}
	startWorker(t, envv)
	startWorker(t, envv)

	r := runBin(t, envv, "splitter", csv, "--force-registration", "--wait", "--poll-interval", "200ms", "--job", "e2e-1")
	if r.Code != 3 {
		t.Fatalf("splitter exit %d, want 3 (rows failed)\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, want := range []string{"job e2e-1 done: 6 rows: 3 succeeded, 1 failed, 1 rejected, 1 duplicate",
		"admins.csv:6", "EMPLOYER_NOT_FOUND", "admins.csv:7", "INVALID_EMAIL"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, r.Stdout)
		}
	}

	// status --json, with the flag after the job.
	r = runBin(t, envv, "splitter", "status", "e2e-1", "--json")
	var st map[string]any
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &st) != nil {
		t.Fatalf("status: exit %d, %s %s", r.Code, r.Stdout, r.Stderr)
	}
	want := map[string]float64{"total": 6, "queued": 0, "succeeded": 3, "failed": 1, "rejected": 1, "duplicate": 1}
	for k, v := range want {
		if st[k] != v {
			t.Errorf("status %s = %v, want %v", k, st[k], v)
		}
	}
	if st["job"] != "e2e-1" {
		t.Errorf("status job = %v", st["job"])
	}

	ctx := context.Background()
	// PFML tables: two users, each with the Employer role; three links, each registered in FINEOS.
	rows, err := s.Pool.Query(ctx, `SELECT u.email_address, e.employer_fein, coalesce(l.fineos_web_id, ''),
		(SELECT count(*) FROM link_user_role r WHERE r.user_id = u.user_id AND r.role_id = 3)
		FROM link_user_leave_administrator l JOIN "user" u USING (user_id) JOIN employer e USING (employer_id)
		ORDER BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	var links []string
	webIDs := map[string]string{}
	for rows.Next() {
		var email, fein, web string
		var roles int
		if err := rows.Scan(&email, &fein, &web, &roles); err != nil {
			t.Fatal(err)
		}
		if web == "" || roles != 1 {
			t.Errorf("link %s/%s: web id %q, %d employer roles", email, fein, web, roles)
		}
		links = append(links, email+"/"+fein)
		webIDs[email+"/"+fein] = web
	}
	if got := strings.Join(links, " "); got != "alice@example.com/123456789 alice@example.com/987654321 bob@example.com/123456789" {
		t.Fatalf("links: %s", got)
	}
	var users, roleLinks int
	if err := s.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM "user"), (SELECT count(*) FROM link_user_role)`).Scan(&users, &roleLinks); err != nil {
		t.Fatal(err)
	}
	if users != 2 || roleLinks != 2 {
		t.Fatalf("%d users, %d role links; want 2 and 2", users, roleLinks)
	}

	// Cognito: one confirmed user per email, none for failed or rejected rows.
	api := awsconf.Cognito(s.AWS)
	for _, e := range []string{"alice@example.com", "bob@example.com"} {
		u, err := api.AdminGetUser(ctx, &cip.AdminGetUserInput{UserPoolId: &s.Resources.UserPoolID, Username: aws.String(e)})
		if err != nil || u.UserStatus != "CONFIRMED" {
			t.Errorf("cognito %s: %v, %v", e, u, err)
		}
	}
	if _, err := api.AdminGetUser(ctx, &cip.AdminGetUserInput{UserPoolId: &s.Resources.UserPoolID, Username: aws.String("carol@example.com")}); err == nil {
		t.Error("a Cognito user was created for the unknown FEIN's row")
	}

	// FINEOS: one user per (email, employer), keyed by the web id on the link.
	parties := map[string]string{"123456789": "1001", "987654321": "1002"}
	fusers := s.Fineos.Users()
	if len(fusers) != 3 {
		t.Fatalf("%d FINEOS users, want 3: %+v", len(fusers), fusers)
	}
	for _, u := range fusers {
		found := false
		for pair, web := range webIDs {
			email, fein, _ := strings.Cut(pair, "/")
			if u.UserID == web && u.Email == email && u.PartyReference == parties[fein] {
				found = true
			}
		}
		if !found {
			t.Errorf("FINEOS user %+v matches no link", u)
		}
	}
	for _, c := range s.Fineos.Calls() {
		if c.Status != 200 {
			t.Errorf("FINEOS call refused: %+v", c)
		}
	}

	// DLQ: exactly the failed row, with its code.
	dlq := queue.New(awsconf.SQS(s.AWS), s.Resources.DLQURL)
	var dead []string
	for {
		msgs, err := dlq.Receive(ctx, 10, 0, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			break
		}
		for _, m := range msgs {
			dead = append(dead, m.Attributes[message.AttrErrorCode]+"/row "+m.Attributes[message.AttrRow])
		}
	}
	sort.Strings(dead)
	if strings.Join(dead, ",") != "EMPLOYER_NOT_FOUND/row 5" {
		t.Fatalf("DLQ: %v", dead)
	}

	// A re-run of the same job reads nothing again and sends nothing.
	r = runBin(t, envv, "splitter", "--job", "e2e-1", "--force-registration", csv)
	if r.Code != 0 || !strings.Contains(r.Stdout, "already recorded") || !strings.Contains(r.Stdout, "sent 0 messages") {
		t.Fatalf("re-run: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
}

func TestSplitterRefusesBadInputAndConfiguration(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	envv := env(s)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.csv")
	good := filepath.Join(dir, "good.csv")
	if err := os.WriteFile(bad, []byte("fein,mail\n123456789,a@b.co\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(good, []byte("fein,email\n123456789,a@b.co\n1,bad\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	r := runBin(t, envv, "splitter", "--job", "refuse-1", bad, good)
	if r.Code != 1 || !strings.Contains(r.Stdout, "REFUSED "+bad) || !strings.Contains(r.Stdout, "lacks the column(s) email") {
		t.Fatalf("refused file: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	r = runBin(t, envv, "splitter", "status", "refuse-1", "--json")
	var st map[string]any
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil || st["total"] != 2.0 || st["queued"] != 1.0 || st["rejected"] != 1.0 {
		t.Fatalf("status after refusal: %s %v", r.Stdout, err)
	}

	r = runBin(t, envv, "splitter", "--dry-run", good)
	if r.Code != 0 || !strings.Contains(r.Stdout, "2 rows: 1 accepted, 1 rejected, 0 duplicate") || !strings.Contains(r.Stdout, "INVALID_EMAIL") {
		t.Fatalf("dry run: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	var jobs int
	if err := s.Pool.QueryRow(context.Background(), `SELECT count(*) FROM bulk_import_job`).Scan(&jobs); err != nil || jobs != 1 {
		t.Fatalf("dry run recorded a job: %d %v", jobs, err)
	}

	r = runBin(t, envv, "splitter", "status", "no-such-job")
	if r.Code != 1 || !strings.Contains(r.Stderr, "job not found") {
		t.Fatalf("unknown job: exit %d %s", r.Code, r.Stderr)
	}
	r = runBin(t, envv, "splitter")
	if r.Code != 2 || !strings.Contains(r.Stderr, "no SOURCE") {
		t.Fatalf("no source: exit %d %s", r.Code, r.Stderr)
	}
	noQueue := append(env(s), "IMPORT_QUEUE_URL=")
	r = runBin(t, noQueue, "splitter", good)
	if r.Code != 2 || !strings.Contains(r.Stderr, "IMPORT_QUEUE_URL is not set") {
		t.Fatalf("missing variable: exit %d %s", r.Code, r.Stderr)
	}
	r = runBin(t, append(env(s), "IMPORT_DLQ_URL=", "COGNITO_USER_POOL_ID="), "worker")
	if r.Code != 2 || !strings.Contains(r.Stderr, "IMPORT_DLQ_URL is not set") || !strings.Contains(r.Stderr, "COGNITO_USER_POOL_ID") {
		t.Fatalf("worker missing variables: exit %d %s", r.Code, r.Stderr)
	}
}

func TestWorkerStopsCleanlyOnSIGTERM(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	w := startWorker(t, env(s), "--shutdown-timeout", "2s")
	time.Sleep(500 * time.Millisecond) // let it reach its receive loop
	took, stopped, err := w.Stop(40 * time.Second)
	if err != nil || !stopped {
		t.Fatalf("exit: %v\n%s", err, w.Output())
	}
	if took > 5*time.Second {
		t.Fatalf("stopping took %s", took)
	}
	if !strings.Contains(w.Output(), `"msg":"stopped"`) {
		t.Fatalf("no stop log:\n%s", w.Output())
	}
}

func TestSIGTERMDuringWorkLosesNothingAndExitsInTime(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{MaxReceiveCount: 2})
	s.AddEmployer(t, "123456789", 1001)
	envv := env(s)
	csv := filepath.Join(t.TempDir(), "admins.csv")
	var b strings.Builder
	b.WriteString("fein,email\n")
	for i := range 8 {
		fmt.Fprintf(&b, "123456789,user%d@example.com\n", i)
	}
	if err := os.WriteFile(csv, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	first := startWorker(t, envv, "--shutdown-timeout", "1s", "--concurrency", "8")
	waitStarted(t, first)
	s.Fineos.SetLatency(4 * time.Second) // every row is in FINEOS when the signal comes
	if r := runBin(t, envv, "splitter", "--force-registration", "--job", "term-1", csv); r.Code != 0 {
		t.Fatalf("splitter: %d %s", r.Code, r.Stderr)
	}
	// Wait until the worker has started on every row; FINEOS then holds them.
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var started int
		if err := s.Pool.QueryRow(context.Background(), `SELECT count(*) FROM bulk_import_row WHERE job_id = 'term-1' AND attempts > 0`).Scan(&started); err != nil {
			t.Fatal(err)
		}
		if started == 8 {
			break
		}
	}
	time.Sleep(300 * time.Millisecond)
	took, stopped, err := first.Stop(30 * time.Second)
	if err != nil || !stopped {
		t.Fatalf("SIGTERM: exit %v after %s\n%s", err, took, first.Output())
	}
	if took > 1*time.Second+bookkeepingSlack {
		t.Fatalf("stopping took %s with --shutdown-timeout 1s", took)
	}
	if !strings.Contains(first.Output(), `"released":8`) {
		t.Fatalf("not every row was released:\n%s", first.Output())
	}
	// A second worker finishes everything; nothing was lost or failed,
	// although the queue allows two receives only.
	s.Fineos.SetLatency(0)
	startWorker(t, envv)
	r := runBin(t, envv, "splitter", "--job", "term-1", "--force-registration", "--wait", "--poll-interval", "200ms", csv)
	if r.Code != 0 || !strings.Contains(r.Stdout, "8 rows: 8 succeeded, 0 failed") {
		t.Fatalf("after restart: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if n := len(s.Fineos.Users()); n != 8 {
		t.Fatalf("%d FINEOS users, want 8", n)
	}
}

func TestASecondSignalExitsAtOnce(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	s.AddEmployer(t, "123456789", 1001)
	envv := env(s)
	csv := filepath.Join(t.TempDir(), "admins.csv")
	if err := os.WriteFile(csv, []byte("fein,email\n123456789,slow@example.com\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w := startWorker(t, envv, "--shutdown-timeout", "25s")
	waitStarted(t, w) // its start-up check of FINEOS is done
	s.Fineos.SetLatency(30 * time.Second)
	if r := runBin(t, envv, "splitter", "--force-registration", "--job", "second-1", csv); r.Code != 0 {
		t.Fatalf("splitter: %d %s", r.Code, r.Stderr)
	}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var started int
		_ = s.Pool.QueryRow(context.Background(), `SELECT count(*) FROM bulk_import_row WHERE job_id = 'second-1' AND attempts > 0`).Scan(&started)
		if started == 1 {
			break
		}
	}
	_ = w.Signal(syscall.SIGTERM)
	if exited, _ := w.Wait(500 * time.Millisecond); exited {
		t.Fatal("the worker exited before its work was done or its deadline passed")
	}
	_ = w.Signal(syscall.SIGTERM)
	exited, err := w.Wait(3 * time.Second)
	var ee *exec.ExitError
	if !exited || !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("after the second signal: exited %v, %v", exited, err)
	}
}

// waitStarted waits for the worker's "worker started" line: its start-up
// checks are done.
func waitStarted(t *testing.T, w *proctest.Proc) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(w.Output(), `"msg":"worker started"`); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) || w.Exited() {
			t.Fatalf("the worker did not start:\n%s", w.Output())
		}
	}
}

// bookkeepingSlack is the time a stopping worker may take beyond its
// shutdown deadline: releasing messages and flushing deletes.
const bookkeepingSlack = 3 * time.Second
