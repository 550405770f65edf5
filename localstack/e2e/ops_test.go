package e2e

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/massgov/bulk-user-import/localstack/fineosstub"
	"github.com/massgov/bulk-user-import/localstack/proctest"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/results"
)

func writeRows(t *testing.T, name string, rows ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte("fein,email,name\n"+strings.Join(rows, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// status runs "splitter status JOB --json".
func status(t *testing.T, envv []string, job string) map[string]any {
	t.Helper()
	r := runBin(t, envv, "splitter", "status", job, "--json")
	var st map[string]any
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &st) != nil {
		t.Fatalf("status %s: exit %d %s %s", job, r.Code, r.Stdout, r.Stderr)
	}
	return st
}

// waitDone polls until the job is done (its completion recorded) and its
// result files written.
func waitDone(t *testing.T, envv []string, job string) map[string]any {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if st := status(t, envv, job); st["done"] == true && st["results"] == "written" {
			if st["queued"] != 0.0 {
				t.Fatalf("job %s done with queued rows: %v", job, st)
			}
			return st
		}
	}
	t.Fatalf("job %s not done in a minute", job)
	return nil
}

// dlqCounts runs "worker dlq list --json" and returns messages by code.
func dlqCounts(t *testing.T, envv []string, args ...string) map[string]int {
	t.Helper()
	r := runBin(t, envv, "worker", append([]string{"dlq", "list", "--json"}, args...)...)
	var l struct {
		Groups []struct {
			Code  string `json:"error_code"`
			Count int    `json:"count"`
		} `json:"groups"`
	}
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &l) != nil {
		t.Fatalf("dlq list: exit %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	out := map[string]int{}
	for _, g := range l.Groups {
		out[g.Code] = g.Count
	}
	return out
}

func s3CSV(t *testing.T, s *stacktest.Stack, key string) [][]string {
	t.Helper()
	out, err := awsconf.S3(s.AWS).GetObject(context.Background(), &s3.GetObjectInput{Bucket: &s.Resources.ResultsBucket, Key: aws.String(key)})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer out.Body.Close()
	rows, err := csv.NewReader(out.Body).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func TestReplayAfterTheDataIsFixed(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	s.AddEmployer(t, "123456789", 1001)
	envv := env(s)
	startWorker(t, envv)
	one := writeRows(t, "one.csv", "123456789,a@example.com,A", "222222222,b@example.com,B", "222222222,c@example.com,C")
	two := writeRows(t, "two.csv", "222222222,d@example.com,D")
	for job, file := range map[string]string{"ops-1": one, "ops-2": two} {
		if r := runBin(t, envv, "splitter", "--force-registration", "--wait", "--poll-interval", "200ms", "--job", job, file); r.Code != 3 {
			t.Fatalf("%s: exit %d\n%s\n%s", job, r.Code, r.Stdout, r.Stderr)
		}
	}
	if got := dlqCounts(t, envv); got["EMPLOYER_NOT_FOUND"] != 3 {
		t.Fatalf("DLQ by code: %v", got)
	}
	if got := dlqCounts(t, envv); got["EMPLOYER_NOT_FOUND"] != 3 {
		t.Fatalf("listing twice changed the DLQ: %v", got)
	}
	// The job's result files are in the bucket: one success, two failures.
	if rows := s3CSV(t, s, results.Key("ops-1", results.FileFailed)); len(rows) != 3 || rows[1][4] != "EMPLOYER_NOT_FOUND" {
		t.Fatalf("FAILED.csv: %v", rows)
	}

	s.AddEmployer(t, "222222222", 1002) // the data is fixed

	r := runBin(t, envv, "worker", "dlq", "replay", "--job", "ops-1", "--error", "EMPLOYER_NOT_FOUND", "--dry-run")
	if r.Code != 0 || !strings.Contains(r.Stdout, "replay: 2 would move") {
		t.Fatalf("dry run: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if got := dlqCounts(t, envv); got["EMPLOYER_NOT_FOUND"] != 3 {
		t.Fatalf("the dry run moved messages: %v", got)
	}
	r = runBin(t, envv, "worker", "dlq", "replay", "--job", "ops-1", "--error", "EMPLOYER_NOT_FOUND")
	if r.Code != 0 || !strings.Contains(r.Stdout, "replay: 2 moved, 1 skipped, 0 errors") {
		t.Fatalf("replay: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	st := waitDone(t, envv, "ops-1")
	if st["succeeded"] != 3.0 || st["failed"] != 0.0 {
		t.Fatalf("after replay: %v", st)
	}
	// The other job's row stays in the DLQ.
	if got := dlqCounts(t, envv, "--job", "ops-2"); got["EMPLOYER_NOT_FOUND"] != 1 {
		t.Fatalf("ops-2 in the DLQ: %v", got)
	}
	// Completing the job again rewrote both files.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if rows := s3CSV(t, s, results.Key("ops-1", results.FileSucceeded)); len(rows) == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("SUCCEEDED.csv not rewritten after the replay")
		}
	}
	if rows := s3CSV(t, s, results.Key("ops-1", results.FileFailed)); len(rows) != 1 {
		t.Fatalf("FAILED.csv after the replay: %v", rows)
	}

	// The same files, locally.
	dir := t.TempDir()
	r = runBin(t, envv, "splitter", "report", "ops-1", "--out", dir)
	if r.Code != 0 || !strings.Contains(r.Stdout, "(3 rows)") {
		t.Fatalf("report: exit %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, results.FileFailed)); err != nil {
		t.Fatal(err)
	}
	r = runBin(t, envv, "splitter", "jobs")
	if r.Code != 0 || !strings.Contains(r.Stdout, "ops-1") || !strings.Contains(r.Stdout, "ops-2") {
		t.Fatalf("jobs: %s %s", r.Stdout, r.Stderr)
	}
	r = runBin(t, envv, "splitter", "status", "ops-2")
	if r.Code != 0 || !strings.Contains(r.Stdout, "EMPLOYER_NOT_FOUND") || !strings.Contains(r.Stdout, "rate over the last") {
		t.Fatalf("status: %s %s", r.Stdout, r.Stderr)
	}
	if fu := s.Fineos.Users(); len(fu) != 3 {
		t.Fatalf("%d FINEOS users, want 3", len(fu))
	}
}

func TestAKilledReplayLosesNothing(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	envv := env(s)
	startWorker(t, envv)
	var rows []string
	for i := range 15 {
		rows = append(rows, fmt.Sprintf("333333333,k%d@example.com,K", i))
	}
	if r := runBin(t, envv, "splitter", "--wait", "--poll-interval", "200ms", "--job", "kill-1", writeRows(t, "k.csv", rows...)); r.Code != 3 {
		t.Fatalf("splitter: exit %d %s", r.Code, r.Stderr)
	}
	s.AddEmployer(t, "333333333", 0)
	p, err := proctest.Start(filepath.Join(binDir, "worker"), envv, "dlq", "replay", "--job", "kill-1", "--rate", "4", "--hold", "3s")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	_ = p.Signal(syscall.SIGKILL)
	_, _ = p.Wait(5 * time.Second)
	// Replay again until the DLQ holds nothing of the job (messages the
	// killed replay held come back after its hold time).
	for i := 0; dlqCounts(t, envv, "--job", "kill-1")["EMPLOYER_NOT_FOUND"] > 0 || i == 0; i++ {
		if i == 6 {
			t.Fatal("the DLQ still holds messages after five replays")
		}
		if i > 0 {
			time.Sleep(2 * time.Second)
		}
		runBin(t, envv, "worker", "dlq", "replay", "--job", "kill-1")
	}
	if st := waitDone(t, envv, "kill-1"); st["succeeded"] != 15.0 {
		t.Fatalf("after the replays: %v", st)
	}
}

func TestCancelAndFailureLimits(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	s.AddEmployer(t, "123456789", 1001)
	envv := env(s)
	startWorker(t, envv, "--concurrency", "2")

	// A wrong file: every row fails (FINEOS refuses each, slowly enough
	// that the maintainer's ticks see the failures pile up), and the job
	// cancels itself within a tick of passing its limit.
	s.Fineos.SetLatency(100 * time.Millisecond)
	s.Fineos.SetFaultRate(1, fineosstub.Fault{Status: http.StatusUnprocessableEntity})
	var rows []string
	for i := range 40 {
		rows = append(rows, fmt.Sprintf("123456789,w%d@example.com,W", i))
	}
	r := runBin(t, envv, "splitter", "--wait", "--poll-interval", "200ms", "--job", "limit-1", "--force-registration", "--max-failures", "5", writeRows(t, "wrong.csv", rows...))
	m := regexp.MustCompile(`the job was cancelled: (\d+) rows failed, more than the 5 allowed`).FindStringSubmatch(r.Stdout)
	if r.Code != 3 || m == nil {
		t.Fatalf("limited job: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	// 2 rows in flight at 10 rows/s each, ticks every 250 ms: a few rows
	// past the limit at most.
	if n, _ := strconv.Atoi(m[1]); n > 15 {
		t.Fatalf("the job was cancelled only after %d failures", n)
	}
	st := status(t, envv, "limit-1")
	if st["total"] != 40.0 || st["cancelled"].(float64) < 20 || st["failed"].(float64)+st["cancelled"].(float64)+st["succeeded"].(float64) != 40 {
		t.Fatalf("limited job: %v", st)
	}
	if r := runBin(t, envv, "splitter", "--job", "limit-1", "--force-registration", writeRows(t, "again.csv", "123456789,x@example.com,X")); r.Code != 1 || !strings.Contains(r.Stderr, "cancelled") {
		t.Fatalf("re-running a cancelled job: exit %d %s", r.Code, r.Stderr)
	}
	s.Fineos.SetFaultRate(0, fineosstub.Fault{})

	// An operator cancels a job while FINEOS is slow.
	s.Fineos.SetLatency(2 * time.Second)
	rows = rows[:0]
	for i := range 20 {
		rows = append(rows, fmt.Sprintf("123456789,c%d@example.com,C", i))
	}
	if r := runBin(t, envv, "splitter", "--force-registration", "--job", "cancel-1", writeRows(t, "c.csv", rows...)); r.Code != 0 {
		t.Fatalf("splitter: %d %s", r.Code, r.Stderr)
	}
	time.Sleep(500 * time.Millisecond)
	r = runBin(t, envv, "splitter", "cancel", "cancel-1", "--reason", "wrong employer list")
	if r.Code != 0 || !strings.Contains(r.Stdout, "job cancel-1 cancelled") {
		t.Fatalf("cancel: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	waitDone(t, envv, "cancel-1")
	// Rows that were in flight finish (and succeed) after the cancel: each
	// reopens the job, whose completion and files follow them.
	time.Sleep(3 * time.Second)
	st = waitDone(t, envv, "cancel-1")
	succeeded, cancelled := st["succeeded"].(float64), st["cancelled"].(float64)
	if succeeded+cancelled != 20 || cancelled < 15 {
		t.Fatalf("after cancel: %v", st)
	}
	n := 0
	for _, u := range s.Fineos.Users() {
		if strings.HasPrefix(u.Email, "c") { // the job's rows: c0@example.com to c19@example.com
			n++
		}
	}
	if float64(n) != succeeded {
		t.Fatalf("%d FINEOS users for %v succeeded rows: a cancelled row was registered", n, succeeded)
	}
	for name, want := range map[string]int{results.FileSucceeded: int(succeeded), results.FileFailed: int(cancelled)} {
		if rows := s3CSV(t, s, results.Key("cancel-1", name)); len(rows)-1 != want {
			t.Fatalf("%s in S3 lists %d rows, want %d: %v", name, len(rows)-1, want, rows)
		}
	}
	dir := t.TempDir()
	if r := runBin(t, envv, "splitter", "report", "cancel-1", "--out", dir); r.Code != 0 {
		t.Fatalf("report: %s", r.Stderr)
	}
	failed, _ := os.ReadFile(filepath.Join(dir, results.FileFailed))
	if strings.Count(string(failed), "CANCELLED") != int(cancelled) || !strings.Contains(string(failed), "job cancelled: wrong employer list") {
		t.Fatalf("FAILED.csv:\n%s", failed)
	}
}
