package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/massgov/bulk-user-import/localstack/faultproxy"
	"github.com/massgov/bulk-user-import/localstack/fineosstub"
	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/localstack/proctest"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/message"
	"github.com/massgov/bulk-user-import/shared/queue"
	"github.com/massgov/bulk-user-import/shared/results"
)

// The tests of this file check, with the real binaries, the transitions
// of a job that its owner (shared/lifecycle) keeps apart: a source being
// recorded, a late duplicate success, and a result-file writer delayed
// past its claim. Each waits on what it can observe (database rows, log
// lines, gates it controls), never on time alone.

// waitUntil polls cond every 50 ms until it holds, and fails the test
// after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
	}
}

// proveTick imports a one-row job and waits until a maintainer has
// completed it and written its files: a maintainer tick that began after
// this call considered every older job. The maintainer completes the ready
// jobs in the order they were created, in one pass, so every job created
// earlier that was ready by then was completed before this one. The row
// needs FINEOS (the stack's employer 123456789 must have a FINEOS id),
// which holds its call until the splitter has ended: the splitter, which
// completes a job whose rows are all final when it ends, finds it queued.
func proveTick(t *testing.T, s *stacktest.Stack, envv []string, job string) {
	t.Helper()
	s.Fineos.Hold()
	defer s.Fineos.Release()
	if r := runBin(t, envv, "splitter", "--job", job, "--force-registration", writeRows(t, job+".csv", generatedRows(job, 1)...)); r.Code != 0 {
		t.Fatalf("splitter %s: exit %d %s", job, r.Code, r.Stderr)
	}
	s.Fineos.Release()
	waitAllDone(t, s, []string{job}, 30*time.Second)
}

// jobState is what bulk_import_job says of a job's completion and files.
type jobState struct {
	finished         bool
	completion       int
	resultsWritten   int
	resultsWrittenAt time.Time // the epoch when never written
	resultsLocation  string
	claimed          bool // a claim on the files is recorded
}

func (j jobState) String() string {
	return fmt.Sprintf("finished %t, completion %d, files written for completion %d at %s to %q, claimed %t",
		j.finished, j.completion, j.resultsWritten, j.resultsWrittenAt.Format(time.RFC3339Nano), j.resultsLocation, j.claimed)
}

func readJob(t *testing.T, s *stacktest.Stack, job string) jobState {
	t.Helper()
	var j jobState
	if err := s.Pool.QueryRow(context.Background(), `SELECT finished_at IS NOT NULL, completion, results_written,
		coalesce(results_written_at, 'epoch'), coalesce(results_location, ''), results_claim IS NOT NULL FROM bulk_import_job WHERE job_id = $1`, job).
		Scan(&j.finished, &j.completion, &j.resultsWritten, &j.resultsWrittenAt, &j.resultsLocation, &j.claimed); err != nil {
		t.Fatalf("job %s: %v", job, err)
	}
	return j
}

// s3Exists reports whether the results bucket holds key.
func s3Exists(t *testing.T, s *stacktest.Stack, key string) bool {
	t.Helper()
	_, err := awsconf.S3(s.AWS).HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: &s.Resources.ResultsBucket, Key: aws.String(key)})
	var nf *types.NotFound
	switch {
	case err == nil:
		return true
	case errors.As(err, &nf):
		return false
	}
	t.Fatalf("head %s: %v", key, err)
	return false
}

// column returns the values of a CSV file's column, header excluded.
func column(rows [][]string, name string) []string {
	if len(rows) == 0 {
		return nil
	}
	i := -1
	for j, h := range rows[0] {
		if h == name {
			i = j
		}
	}
	var out []string
	for _, r := range rows[1:] {
		if i >= 0 && i < len(r) {
			out = append(out, r[i])
		}
	}
	return out
}

// logLines counts the lines of a process's output that contain every one
// of parts.
func logLines(out string, parts ...string) int {
	n := 0
	for line := range strings.Lines(out) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

func TestAJobIsNotCompletedWhileASecondSourceIsBeingRecorded(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	s.AddEmployer(t, "123456789", 1001)
	envv := env(s)
	const job = "two-sources"
	// The first source is recorded and sent while no worker runs.
	if r := runBin(t, envv, "splitter", "--job", job, writeRows(t, "a.csv", generatedRows("first", 3)...)); r.Code != 0 {
		t.Fatalf("splitter a.csv: exit %d %s", r.Code, r.Stderr)
	}

	// The second is a named pipe: the splitter that reads it stays in the
	// middle of recording it for as long as the test keeps it open.
	fifo := filepath.Join(t.TempDir(), "b.csv")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// Opened read-write, the pipe waits for no reader (Linux).
	pipe, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	second := generatedRows("second", 3)
	if _, err := fmt.Fprintf(pipe, "fein,email,name\n%s\n", second[0]); err != nil {
		t.Fatal(err)
	}
	sp, err := proctest.Start(filepath.Join(binDir, "splitter"), envv, "--job", job, fifo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, stopped, _ := sp.Stop(20 * time.Second); !stopped {
			t.Errorf("the second splitter did not stop within 20s of SIGTERM")
		}
		if t.Failed() {
			t.Logf("second splitter's output:\n%s", sp.Output())
		}
	})
	t.Cleanup(func() { pipe.Close() }) // first: a splitter blocked on it ends
	waitUntil(t, 30*time.Second, "the second splitter copying the pipe's rows", func() bool {
		if sp.Exited() {
			t.Fatalf("the second splitter ended early:\n%s", sp.Output())
		}
		return pgtest.Count(t, s.Pool, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND state = 'active' AND query ILIKE 'copy %bulk_import_staging%from stdin%'`) == 1
	})

	// A worker registers the first source's rows; then a maintainer tick
	// considers the job, which must not be completed without the source
	// still being recorded.
	startWorker(t, envv)
	waitUntil(t, 30*time.Second, "the first source's rows registered", func() bool {
		return pgtest.Count(t, s.Pool, `SELECT count(*) FROM bulk_import_row WHERE job_id = $1 AND state = 'succeeded'`, job) == 3
	})
	proveTick(t, s, envv, "canary-sources")
	if j := readJob(t, s, job); j.finished || j.completion != 0 || j.resultsWritten != 0 {
		t.Fatalf("the job was completed while its second source was being recorded: %v", j)
	}
	if st := status(t, envv, job); st["done"] == true {
		t.Fatalf("status says done while a source is being recorded: %v", st)
	}
	for _, f := range []string{results.FileSucceeded, results.FileFailed} {
		if s3Exists(t, s, results.Key(job, f)) {
			t.Fatalf("%s was written while a source was being recorded", f)
		}
	}

	// The rest of the second source: the splitter records and sends it,
	// and the job is completed once, with both sources' rows.
	for _, row := range second[1:] {
		if _, err := fmt.Fprintln(pipe, row); err != nil {
			t.Fatal(err)
		}
	}
	if err := pipe.Close(); err != nil {
		t.Fatal(err)
	}
	if exited, err := sp.Wait(60 * time.Second); !exited || err != nil {
		t.Fatalf("second splitter: exited %t, %v\n%s", exited, err, sp.Output())
	}
	waitAllDone(t, s, []string{job}, 60*time.Second)
	st := status(t, envv, job)
	if st["succeeded"] != 6.0 || st["completion"] != 1.0 {
		t.Fatalf("after the second source: %v", st)
	}
	emails := strings.Join(column(s3CSV(t, s, results.Key(job, results.FileSucceeded)), "email"), " ")
	for _, want := range []string{"first-0@", "first-2@", "second-0@", "second-2@"} {
		if !strings.Contains(emails, want) {
			t.Errorf("SUCCEEDED.csv lacks %s: %s", want, emails)
		}
	}
	if strings.Count(emails, "@") != 6 {
		t.Errorf("SUCCEEDED.csv lists %d rows, want 6: %s", strings.Count(emails, "@"), emails)
	}
	if rows := s3CSV(t, s, results.Key(job, results.FileFailed)); len(rows) != 1 {
		t.Errorf("FAILED.csv: %v", rows)
	}
}

func TestADuplicateDeliveryThatSucceedsAfterTheCompletionReopensNothing(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	s.AddEmployer(t, "123456789", 1001)
	envv := env(s)
	ctx := context.Background()
	const job = "late-duplicate"
	// The first provisioning call FINEOS gets is held until released.
	held := s.Fineos.Hold()
	t.Cleanup(s.Fineos.Release)
	if r := runBin(t, envv, "splitter", "--job", job, "--force-registration", writeRows(t, "d.csv", generatedRows(job, 1)...)); r.Code != 0 {
		t.Fatalf("splitter: exit %d %s", r.Code, r.Stderr)
	}
	// A second delivery of the row: its message again, as SQS may deliver.
	var email, fein string
	if err := s.Pool.QueryRow(ctx, `SELECT email, fein FROM bulk_import_row WHERE job_id = $1 AND row_no = 1`, job).Scan(&email, &fein); err != nil {
		t.Fatal(err)
	}
	body, err := message.Encode(message.Row{Job: job, Row: 1, Email: email, FEIN: fein, ForceRegistration: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := queue.New(awsconf.SQS(s.AWS), s.Resources.QueueURL).Send(ctx, queue.Entry{Body: body}); err != nil {
		t.Fatal(err)
	}

	// Both deliveries start while the row is queued; the first to reach
	// FINEOS waits there, the other registers the row, and the job is
	// completed and its files written.
	w := startWorker(t, envv) // four messages at once
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("no FINEOS call was held")
	}
	waitAllDone(t, s, []string{job}, 30*time.Second)
	before := readJob(t, s, job)
	if before.completion != 1 || before.resultsWritten != 1 {
		t.Fatalf("before the late success: %v", before)
	}
	waitUntil(t, 30*time.Second, "the other delivery's success logged (and only it)", func() bool {
		return logLines(w.Output(), `"msg":"row succeeded"`, `"job":"`+job+`"`) == 1
	})

	// The held delivery goes on and records the row's success once more,
	// after the completion.
	s.Fineos.Release()
	waitUntil(t, 30*time.Second, "the held delivery's success", func() bool {
		return logLines(w.Output(), `"msg":"row succeeded"`, `"job":"`+job+`"`) == 2
	})
	proveTick(t, s, envv, "canary-duplicate")
	after := readJob(t, s, job)
	if !after.finished || after.completion != 1 || after.resultsWritten != 1 || !after.resultsWrittenAt.Equal(before.resultsWrittenAt) {
		t.Fatalf("a success that changed nothing reopened the job: before %v, after %v", before, after)
	}
	var calls []fineosstub.Call
	for _, c := range s.Fineos.Calls() {
		if c.Email == email {
			calls = append(calls, c)
		}
	}
	if len(calls) != 2 || calls[0].Status != 200 || calls[1].Status != 200 {
		t.Fatalf("FINEOS calls about the row: %+v", calls)
	}
	if rows := s3CSV(t, s, results.Key(job, results.FileSucceeded)); len(rows) != 2 {
		t.Fatalf("SUCCEEDED.csv: %v", rows)
	}
}

func TestAResultWriterDelayedPastItsClaimLeavesTheNewerFiles(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	s.AddEmployer(t, "123456789", 1001)
	envv := env(s)
	const job = "stale-writer"
	// The first worker writes to S3 through a proxy whose gate holds
	// every PutObject.
	proxy, err := faultproxy.NewAWS(s.EndpointURL)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	gate := proxy.Hold(faultproxy.PutObject)
	t.Cleanup(gate.Release) // before the server closes: it waits for held requests
	// One row succeeds, one fails (unknown employer). The job is imported
	// before any worker runs, so that only a maintainer completes it.
	file := writeRows(t, "s.csv", "123456789,ok@example.com,OK", "444444444,late@example.com,Late")
	if r := runBin(t, envv, "splitter", "--job", job, file); r.Code != 0 {
		t.Fatalf("splitter: exit %d %s", r.Code, r.Stderr)
	}
	// The first worker, alone, becomes leader; it registers the rows, its
	// maintainer completes the job, and its first PUT is held.
	// A visibility timeout of 3 s: a receive the first worker had in flight
	// when it was stopped may take the replayed message, for 3 s at most.
	leases := []string{"--leader-lease", "2s", "--results-lease", "3s"}
	w1 := startWorker(t, env(s, "AWS_ENDPOINT_URL_S3="+srv.URL), append(leases, "--visibility-timeout", "3s")...)
	t.Cleanup(func() { _ = w1.Signal(syscall.SIGCONT) }) // before it is stopped
	select {
	case <-gate.Held():
	case <-time.After(30 * time.Second):
		t.Fatalf("no result file PUT was held\n%s", w1.Output())
	}
	if j := readJob(t, s, job); j.completion != 1 || !j.claimed || leaderPID(t, s) != w1.PID() {
		t.Fatalf("while the first PUT is held: %v, leader pid %d, first worker's %d", j, leaderPID(t, s), w1.PID())
	}
	waitUntil(t, 30*time.Second, "the failed row's dead letter sent", func() bool {
		return pgtest.Count(t, s.Pool, `SELECT count(*) FROM bulk_import_row WHERE job_id = $1 AND state = 'failed' AND dead_letter = 'sent'`, job) == 1
	})
	// The writer stalls.
	if err := w1.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}

	// The data is fixed and the dead letter replayed: a second worker
	// registers the row, becomes leader once the first's lease expires,
	// completes the job again and, once the first's claim has run out,
	// writes the second completion's files.
	s.AddEmployer(t, "444444444", 0)
	if r := runBin(t, envv, "worker", "dlq", "replay", "--job", job); r.Code != 0 || !strings.Contains(r.Stdout, "replay: 1 moved") {
		t.Fatalf("replay: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	w2 := startWorker(t, envv, leases...)
	waitUntil(t, 60*time.Second, "the second completion's files written", func() bool {
		j := readJob(t, s, job)
		return j.completion == 2 && j.resultsWritten == 2
	})
	if leaderPID(t, s) != w2.PID() {
		t.Fatalf("leader pid %d, want the second worker's %d", leaderPID(t, s), w2.PID())
	}

	// The stalled writer resumes: its claim ran out by its own clock, so
	// it stops writing; its held PUT's client goes away. Only then does the
	// gate open.
	if err := w1.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped := func() bool {
		out := w1.Output()
		return strings.Contains(out, "the next claim writes them") || strings.Contains(out, "the claim was taken over by another writer")
	}
	deadline := time.Now().Add(20 * time.Second)
	for !stopped() || gate.Abandoned() == 0 {
		if time.Now().After(deadline) {
			t.Errorf("the resumed writer did not give up its held PUT within 20s (abandoned: %d)", gate.Abandoned())
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	gate.Release()
	waitUntil(t, 30*time.Second, "the first worker's outcome logged", stopped)

	// The newer files stand: both rows succeeded, none failed.
	ok := strings.Join(column(s3CSV(t, s, results.Key(job, results.FileSucceeded)), "email"), " ")
	if ok != "ok@example.com late@example.com" {
		t.Errorf("SUCCEEDED.csv lists %q, want the second completion's two rows", ok)
	}
	if rows := s3CSV(t, s, results.Key(job, results.FileFailed)); len(rows) != 1 {
		t.Errorf("FAILED.csv lists %d rows, want none (the second completion's): %v", len(rows)-1, rows)
	}
	j := readJob(t, s, job)
	if j.completion != 2 || j.resultsWritten != 2 || j.resultsLocation == "" || j.claimed {
		t.Errorf("after the stalled writer resumed: %v", j)
	}
	if logLines(w2.Output(), `"msg":"result files written"`, `"job":"`+job+`"`, `"completion":2`) != 1 {
		t.Errorf("the second worker did not log writing the second completion's files:\n%s", w2.Output())
	}
	if logLines(w1.Output(), `"msg":"result files written"`, `"job":"`+job+`"`) != 0 {
		t.Errorf("the stalled writer recorded its files:\n%s", w1.Output())
	}
}
