// Package e2e runs the real splitter and worker binaries against the
// embedded local stack and checks every system they write to.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cip "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider"

	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/consume"
	"github.com/massgov/bulk-user-import/shared/queue"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bui-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for _, pkg := range []string{"splitter", "worker"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, pkg), "github.com/massgov/bulk-user-import/"+pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", pkg, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env returns the process environment for the binaries: the stack's
// variables replace any of the same name in the test's environment.
func env(s *stacktest.Stack, extra ...string) []string {
	vars := s.Env()
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := vars[k]; ok || strings.HasPrefix(k, "FINEOS_") || strings.HasPrefix(k, "DB_") || k == "COGNITO_IDENTITY_POOL_ID" {
			continue
		}
		out = append(out, kv)
	}
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	out = append(out, "LOG_FORMAT=json")
	return append(out, extra...)
}

type result struct {
	code           int
	stdout, stderr string
}

func runBin(t *testing.T, envv []string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, name), args...)
	cmd.Env = envv
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return r
}

// worker is a running worker process.
type worker struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startWorker(t *testing.T, envv []string, args ...string) *worker {
	t.Helper()
	args = append([]string{"--wait-time", "1s", "--retry-base", "1s", "--retry-max", "2s", "--concurrency", "4"}, args...)
	cmd := exec.Command(filepath.Join(binDir, "worker"), args...)
	cmd.Env = envv
	w := &worker{cmd: cmd, stderr: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = w.stderr, w.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.done <- cmd.Wait() }()
	t.Cleanup(func() {
		w.stop(t)
		if t.Failed() {
			t.Logf("worker log:\n%s", w.stderr.String())
		}
	})
	return w
}

// stop sends SIGTERM and returns how long the worker took to exit, and
// its exit error. Stopping a stopped worker does nothing.
func (w *worker) stop(t *testing.T) (time.Duration, error) {
	t.Helper()
	if w.cmd.ProcessState != nil {
		return 0, nil
	}
	start := time.Now()
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-w.done:
		return time.Since(start), err
	case <-time.After(40 * time.Second):
		_ = w.cmd.Process.Kill()
		t.Errorf("worker did not stop within 40s of SIGTERM")
		return time.Since(start), <-w.done
	}
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
	if r.code != 3 {
		t.Fatalf("splitter exit %d, want 3 (rows failed)\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"job e2e-1 done: 6 rows: 3 succeeded, 1 failed, 1 rejected, 1 duplicate",
		"admins.csv:6", "EMPLOYER_NOT_FOUND", "admins.csv:7", "INVALID_EMAIL"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, r.stdout)
		}
	}

	// status --json, with the flag after the job.
	r = runBin(t, envv, "splitter", "status", "e2e-1", "--json")
	var st map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil {
		t.Fatalf("status: exit %d, %s %s", r.code, r.stdout, r.stderr)
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
			dead = append(dead, m.Attributes[consume.AttrErrorCode]+"/row "+m.Attributes[consume.AttrRow])
		}
	}
	sort.Strings(dead)
	if strings.Join(dead, ",") != "EMPLOYER_NOT_FOUND/row 5" {
		t.Fatalf("DLQ: %v", dead)
	}

	// A re-run of the same job reads nothing again and sends nothing.
	r = runBin(t, envv, "splitter", "--job", "e2e-1", "--force-registration", csv)
	if r.code != 0 || !strings.Contains(r.stdout, "already recorded") || !strings.Contains(r.stdout, "sent 0 messages") {
		t.Fatalf("re-run: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
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
	if r.code != 1 || !strings.Contains(r.stdout, "REFUSED "+bad) || !strings.Contains(r.stdout, "lacks the column(s) email") {
		t.Fatalf("refused file: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = runBin(t, envv, "splitter", "status", "refuse-1", "--json")
	var st map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st["total"] != 2.0 || st["queued"] != 1.0 || st["rejected"] != 1.0 {
		t.Fatalf("status after refusal: %s %v", r.stdout, err)
	}

	r = runBin(t, envv, "splitter", "--dry-run", good)
	if r.code != 0 || !strings.Contains(r.stdout, "2 rows: 1 accepted, 1 rejected, 0 duplicate") || !strings.Contains(r.stdout, "INVALID_EMAIL") {
		t.Fatalf("dry run: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	var jobs int
	if err := s.Pool.QueryRow(context.Background(), `SELECT count(*) FROM bulk_import_job`).Scan(&jobs); err != nil || jobs != 1 {
		t.Fatalf("dry run recorded a job: %d %v", jobs, err)
	}

	r = runBin(t, envv, "splitter", "status", "no-such-job")
	if r.code != 1 || !strings.Contains(r.stderr, "job not found") {
		t.Fatalf("unknown job: exit %d %s", r.code, r.stderr)
	}
	r = runBin(t, envv, "splitter")
	if r.code != 2 || !strings.Contains(r.stderr, "no SOURCE") {
		t.Fatalf("no source: exit %d %s", r.code, r.stderr)
	}
	noQueue := append(env(s), "IMPORT_QUEUE_URL=")
	r = runBin(t, noQueue, "splitter", good)
	if r.code != 2 || !strings.Contains(r.stderr, "IMPORT_QUEUE_URL is not set") {
		t.Fatalf("missing variable: exit %d %s", r.code, r.stderr)
	}
	r = runBin(t, append(env(s), "IMPORT_DLQ_URL=", "COGNITO_USER_POOL_ID="), "worker")
	if r.code != 2 || !strings.Contains(r.stderr, "IMPORT_DLQ_URL is not set") || !strings.Contains(r.stderr, "COGNITO_USER_POOL_ID") {
		t.Fatalf("worker missing variables: exit %d %s", r.code, r.stderr)
	}
}

func TestWorkerStopsCleanlyOnSIGTERM(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	w := startWorker(t, env(s), "--shutdown-timeout", "2s")
	time.Sleep(500 * time.Millisecond) // let it reach its receive loop
	took, err := w.stop(t)
	if err != nil {
		t.Fatalf("exit: %v\n%s", err, w.stderr.String())
	}
	if took > 5*time.Second {
		t.Fatalf("stopping took %s", took)
	}
	if !strings.Contains(w.stderr.String(), `"msg":"stopped"`) {
		t.Fatalf("no stop log:\n%s", w.stderr.String())
	}
}
