package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/localstack/proctest"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/maintain"
	"github.com/massgov/bulk-user-import/shared/results"
)

// generatedRows returns n CSV rows for employer 123456789 with emails
// prefix-0@example.com and on.
func generatedRows(prefix string, n int) []string {
	rows := make([]string, n)
	for i := range n {
		rows[i] = fmt.Sprintf("123456789,%s-%d@example.com,N", prefix, i)
	}
	return rows
}

// importJobs runs the splitter for each job (at most eight at once) and
// fails the test if one fails.
func importJobs(t *testing.T, envv []string, files map[string]string) {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for job, file := range files {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if r := runBin(t, envv, "splitter", "--job", job, file); r.Code != 0 {
				t.Errorf("splitter %s: exit %d %s", job, r.Code, r.Stderr)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// waitAllDone waits until every job is done with its files written, and
// fails the test with the jobs that are not after timeout.
func waitAllDone(t *testing.T, s *stacktest.Stack, jobs []string, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	var pending []string
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		rows, err := s.Pool.Query(ctx, `SELECT job_id FROM bulk_import_job
			WHERE job_id = ANY($1) AND NOT (finished_at IS NOT NULL AND results_written >= completion AND results_location IS NOT NULL)`, jobs)
		if err != nil {
			t.Fatal(err)
		}
		pending = pending[:0]
		for rows.Next() {
			var j string
			if err := rows.Scan(&j); err != nil {
				t.Fatal(err)
			}
			pending = append(pending, j)
		}
		if len(pending) == 0 {
			return
		}
	}
	t.Fatalf("%d of %d jobs not done with their files after %s: %v", len(pending), len(jobs), timeout, pending)
}

func TestEveryJobFinishesWhenManyWorkersFinishTheirLastRowsTogether(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	s.AddEmployer(t, "123456789", 1001)
	envv := env(s)
	for range 4 {
		startWorker(t, envv, "--concurrency", "32", "--db-max-conns", "12")
	}
	// 40 jobs of 4 rows: the rows of a job are handled at the same moment
	// by different workers. And one large job.
	files := map[string]string{}
	var jobs []string
	for j := range 40 {
		job := fmt.Sprintf("small-%02d", j)
		files[job] = writeRows(t, job+".csv", generatedRows(job, 4)...)
		jobs = append(jobs, job)
	}
	files["large"] = writeRows(t, "large.csv", generatedRows("large", 1500)...)
	jobs = append(jobs, "large")
	importJobs(t, envv, files)
	waitAllDone(t, s, jobs, 3*time.Minute)

	for _, job := range jobs {
		want := 4
		if job == "large" {
			want = 1500
		}
		st := status(t, envv, job)
		if st["succeeded"] != float64(want) || st["done"] != true || st["completion"] != 1.0 {
			t.Errorf("job %s: %v", job, st)
		}
		if rows := s3CSV(t, s, results.Key(job, results.FileSucceeded)); len(rows) != want+1 {
			t.Errorf("job %s: SUCCEEDED.csv has %d rows, want %d", job, len(rows)-1, want)
		}
	}
	// One leader did the job-wide work: the other workers completed nothing.
	if n := pgtest.Count(t, s.Pool, `SELECT count(*) FROM bulk_import_leader WHERE name = $1 AND expires_at > now()`, maintain.LeaseName); n != 1 {
		t.Fatalf("%d live leases", n)
	}
}

// leaderPID returns the process id of the live maintainer leader, or 0.
func leaderPID(t *testing.T, s *stacktest.Stack) int {
	t.Helper()
	id, live, ok, err := maintain.Leader(context.Background(), s.Pool, maintain.LeaseName)
	if err != nil {
		t.Fatal(err)
	}
	if !ok || !live {
		return 0
	}
	parts := strings.Split(id, "/")
	pid, _ := strconv.Atoi(parts[len(parts)-2])
	return pid
}

func TestAJobCompletesWhenItsWorkerIsKilledAfterTheLastRowAndTheLeaderIsReplaced(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	s.AddEmployer(t, "123456789", 1001)
	envv := env(s)
	// The only worker: its maintainer ticks once, when elected, and then
	// not for an hour; so it registers every row but never completes the
	// job. FINEOS is slow enough that the splitter, which completes a job
	// whose rows are all final when it ends, finds them queued.
	first := startWorker(t, envv, "--maintain-interval", "1h", "--leader-lease", "2s")
	for deadline := time.Now().Add(20 * time.Second); leaderPID(t, s) != first.PID(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first worker did not become leader")
		}
	}
	time.Sleep(500 * time.Millisecond) // its one tick is over
	s.Fineos.SetLatency(300 * time.Millisecond)
	if r := runBin(t, envv, "splitter", "--job", "killed", "--force-registration", writeRows(t, "k.csv", generatedRows("killed", 12)...)); r.Code != 0 {
		t.Fatalf("splitter: exit %d %s", r.Code, r.Stderr)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if st := status(t, envv, "killed"); st["succeeded"] == 12.0 {
			if st["done"] == true {
				t.Fatal("the job was completed by a maintainer that should not have ticked")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("rows not registered")
		}
	}
	// Killed between the rows' commits and the job's completion.
	first.Kill()
	r := runBin(t, envv, "splitter", "status", "killed")
	if !strings.Contains(r.Stdout, "every row is final; the job's completion is not recorded yet") {
		t.Fatalf("status of a job waiting for its completion:\n%s", r.Stdout)
	}
	// A new worker takes the lease once the dead leader's expires, and its
	// maintainer completes the job and writes its files.
	start := time.Now()
	second := startWorker(t, envv, "--leader-lease", "2s")
	waitAllDone(t, s, []string{"killed"}, 30*time.Second)
	if leaderPID(t, s) != second.PID() {
		t.Fatalf("leader is pid %d, want the second worker %d", leaderPID(t, s), second.PID())
	}
	t.Logf("the job completed %s after the new worker started", time.Since(start).Round(100*time.Millisecond))
	if !strings.Contains(second.Output(), `"msg":"maintainer: this worker is the leader"`) {
		t.Fatalf("no election in the second worker's log:\n%s", second.Output())
	}
	r = runBin(t, envv, "splitter", "wait", "killed")
	if r.Code != 0 || !regexp.MustCompile(`result files: written \S+ \S+ to s3://`).MatchString(r.Stdout) {
		t.Fatalf("wait: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
}

func TestAKilledLeaderIsReplacedAndTheNewOneWorks(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	s.AddEmployer(t, "123456789", 1001)
	envv := env(s)
	var workers []*proctest.Proc
	for range 3 {
		workers = append(workers, startWorker(t, envv, "--leader-lease", "2s"))
	}
	var pid int
	for deadline := time.Now().Add(20 * time.Second); pid == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		pid = leaderPID(t, s)
	}
	for _, w := range workers {
		if w.PID() == pid {
			w.Kill()
		}
	}
	killed := time.Now()
	var next int
	for deadline := time.Now().Add(10 * time.Second); next == 0 || next == pid; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no new leader 10 s after the leader was killed (lease 2 s)")
		}
		next = leaderPID(t, s)
	}
	t.Logf("a new leader %s after the old one was killed", time.Since(killed).Round(100*time.Millisecond))
	importJobs(t, envv, map[string]string{"after": writeRows(t, "a.csv", generatedRows("after", 5)...)})
	waitAllDone(t, s, []string{"after"}, 30*time.Second)
	r := runBin(t, envv, "splitter", "status", "after")
	if r.Code != 0 || !strings.Contains(r.Stdout, fmt.Sprintf("maintainer: the leader is the worker %s/%d/", mustHostname(t), next)) {
		t.Fatalf("status does not name the leader %d:\n%s", next, r.Stdout)
	}
	st := status(t, envv, "after")
	if m, ok := st["maintainer"].(map[string]any); !ok || m["live"] != true {
		t.Fatalf("status --json maintainer: %v", st["maintainer"])
	}
}

func mustHostname(t *testing.T) string {
	t.Helper()
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestLostMessagesAreSentAgainByTheMaintainerAndBySplitterResend(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	s.AddEmployer(t, "123456789", 1001)
	envv := env(s)
	ctx := context.Background()
	purge := func() {
		t.Helper()
		if _, err := awsconf.SQS(s.AWS).PurgeQueue(ctx, &sqs.PurgeQueueInput{QueueUrl: &s.Resources.QueueURL}); err != nil {
			t.Fatal(err)
		}
	}
	// Two jobs are sent while no worker runs, then the queue is purged:
	// every message is gone, the rows stay queued.
	importJobs(t, envv, map[string]string{
		"auto":   writeRows(t, "auto.csv", generatedRows("auto", 15)...),
		"manual": writeRows(t, "manual.csv", generatedRows("manual", 10)...),
	})
	purge()

	// The operator's way, at once.
	r := runBin(t, envv, "splitter", "resend", "manual", "--dry-run")
	if r.Code != 0 || !strings.Contains(r.Stdout, "job manual: 10 messages would be sent again") {
		t.Fatalf("resend --dry-run: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	r = runBin(t, envv, "splitter", "resend", "manual", "--older-than", "1h")
	if r.Code != 0 || !strings.Contains(r.Stdout, "job manual: sent 0 messages again (queued rows idle for 1h0m0s or more)") {
		t.Fatalf("resend --older-than 1h: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	r = runBin(t, envv, "splitter", "resend", "manual")
	if r.Code != 0 || !strings.Contains(r.Stdout, "job manual: sent 10 messages again") {
		t.Fatalf("resend: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	// The maintainer's way: a worker that presumes a row lost after 3 s of
	// silence (and of an empty queue) re-sends the other job's rows.
	w := startWorker(t, envv, "--recover-after", "3s")
	waitAllDone(t, s, []string{"auto", "manual"}, 60*time.Second)
	if !strings.Contains(w.Output(), `"msg":"maintainer: re-sent the messages of queued rows presumed lost`) ||
		!strings.Contains(w.Output(), `"job":"auto","rows_resent":15`) {
		t.Fatalf("the maintainer did not log its re-send:\n%s", w.Output())
	}
	for job, n := range map[string]int{"auto": 15, "manual": 10} {
		if st := status(t, envv, job); st["succeeded"] != float64(n) {
			t.Errorf("job %s: %v", job, st)
		}
	}
	// Nothing was registered twice.
	if n := pgtest.Count(t, s.Pool, `SELECT count(*) FROM "user"`); n != 25 {
		t.Fatalf("%d users, want 25", n)
	}
	if n := pgtest.Count(t, s.Pool, `SELECT count(*) FROM link_user_leave_administrator`); n != 25 {
		t.Fatalf("%d links, want 25", n)
	}
	if n := pgtest.Count(t, s.Pool, `SELECT sum(resends) FROM bulk_import_row`); n != 25 {
		t.Fatalf("%d resends recorded, want 25", n)
	}
	// A finished job has nothing to re-send.
	r = runBin(t, envv, "splitter", "resend", "auto")
	if r.Code != 0 || !strings.Contains(r.Stdout, "sent 0 messages again") {
		t.Fatalf("resend of a finished job: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
}
