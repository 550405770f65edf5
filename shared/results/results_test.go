package results_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/csvrows"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/results"
)

// record records a job from CSV sources, as the splitter does.
func record(t *testing.T, store *jobs.Store, job string, sources ...string) {
	t.Helper()
	ctx := context.Background()
	if _, _, err := store.CreateJob(ctx, job, false, jobs.Limits{}); err != nil {
		t.Fatal(err)
	}
	for i, content := range sources {
		name := fmt.Sprintf("/in/%s-%d.csv", job, i)
		r, err := csvrows.NewReader(name, strings.NewReader(content))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.RecordSource(ctx, job, name, r.Header(), r); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.MarkRecorded(ctx, job); err != nil {
		t.Fatal(err)
	}
}

func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rows
}

func join(rows [][]string) string {
	var b strings.Builder
	for _, r := range rows {
		b.WriteString(strings.Join(r, "|") + "\n")
	}
	return b.String()
}

func TestReportFilesHoldEveryRowWhereItBelongs(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	store := jobs.NewStore(s.Pool)
	ctx := context.Background()
	record(t, store, "j1",
		"fein,email,name\n"+
			"123456789,ok@b.co,Ok\n"+ // row 1: succeeds
			"987654321,gone@b.co,\"=HYPERLINK(\"\"http://x\"\")\"\n"+ // row 2: fails; a formula
			"12x,bad@b.co,Bad\n"+ // row 3: rejected
			"123456789,OK@B.CO,Dup of ok\n"+ // row 4: duplicate of row 1
			"987654321,gone@b.co,Dup of gone\n"+ // row 5: duplicate of row 2
			"555666777,wait@b.co,+1 555\n", // row 6: still queued
		"Name,EMAIL,fein,extra\n"+ // a second file with other columns, in another order
			"Two,two@b.co,123456789,@x\n") // row 7: succeeds
	if err := store.Succeed(ctx, "j1", 1); err != nil {
		t.Fatal(err)
	}
	if err := store.Fail(ctx, "j1", 2, "EMPLOYER_NOT_FOUND", "employer: no employer has this FEIN"); err != nil {
		t.Fatal(err)
	}
	if err := store.Succeed(ctx, "j1", 7); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c, err := results.WriteDir(ctx, store, "j1", dir)
	if err != nil {
		t.Fatal(err)
	}
	if c != (results.Counts{Succeeded: 3, Failed: 3, Pending: 1}) {
		t.Fatalf("counts %+v", c)
	}
	src0 := "/in/j1-0.csv"
	wantSucceeded := "fein|email|name|Name|EMAIL|extra\n" +
		"123456789|ok@b.co|Ok|||\n" +
		"123456789|OK@B.CO|Dup of ok|||\n" +
		"123456789|||Two|two@b.co|'@x\n"
	if got := join(readCSV(t, filepath.Join(dir, results.FileSucceeded))); got != wantSucceeded {
		t.Errorf("SUCCEEDED.csv:\n%s\nwant:\n%s", got, wantSucceeded)
	}
	wantFailed := "fein|email|name|Name|EMAIL|extra|error|error_code|source|line\n" +
		"987654321|gone@b.co|'=HYPERLINK(\"http://x\")||||employer: no employer has this FEIN|EMPLOYER_NOT_FOUND|" + src0 + "|3\n" +
		"12x|bad@b.co|Bad||||fein: fein \"12x\" must contain only digits, dashes and spaces|INVALID_FEIN|" + src0 + "|4\n" +
		"987654321|gone@b.co|Dup of gone||||duplicate of line 3 (row 2), which failed|EMPLOYER_NOT_FOUND|" + src0 + "|6\n"
	if got := join(readCSV(t, filepath.Join(dir, results.FileFailed))); got != wantFailed {
		t.Errorf("FAILED.csv:\n%s\nwant:\n%s", got, wantFailed)
	}
	wantPending := "fein|email|name|Name|EMAIL|extra|source|line\n" +
		"555666777|wait@b.co|'+1 555||||" + src0 + "|7\n"
	if got := join(readCSV(t, filepath.Join(dir, results.FilePending))); got != wantPending {
		t.Errorf("PENDING.csv:\n%s\nwant:\n%s", got, wantPending)
	}

	// Once nothing is pending, a new report drops the stale PENDING.csv.
	if err := store.Succeed(ctx, "j1", 6); err != nil {
		t.Fatal(err)
	}
	if _, err := results.WriteDir(ctx, store, "j1", dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, results.FilePending)); !os.IsNotExist(err) {
		t.Fatalf("PENDING.csv left behind: %v", err)
	}
}

func TestNeutralize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"=1+1": "'=1+1", "+1": "'+1", "-1": "'-1", "@SUM(A1)": "'@SUM(A1)", "\tx": "'\tx", "\rx": "'\rx",
		"": "", "plain": "plain", "a=b": "a=b", "12-3456789": "12-3456789",
	} {
		if got := results.Neutralize(in); got != want {
			t.Errorf("Neutralize(%q) = %q, want %q", in, got, want)
		}
	}
}

// countingS3 counts the result files put.
type countingS3 struct {
	api  results.S3API
	puts atomic.Int64
}

func (c *countingS3) PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	c.puts.Add(1)
	return c.api.PutObject(ctx, in, opts...)
}

func TestResultsAreWrittenOnceWhenWorkersFinishTheLastRowsTogether(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	store := jobs.NewStore(s.Pool)
	ctx := context.Background()
	s3api := awsconf.S3(s.AWS)
	counter := &countingS3{api: s3api}
	fin := results.NewFinisher(store, counter, s.Resources.ResultsBucket, logging.Discard())

	const jobsN, workers = 10, 8
	for j := range jobsN {
		job := fmt.Sprintf("race-%d", j)
		var b strings.Builder
		b.WriteString("fein,email\n")
		for w := range workers {
			fmt.Fprintf(&b, "123456789,u%d@b.co\n", w)
		}
		record(t, store, job, b.String())
		// Eight workers finish the job's eight rows at the same moment.
		var wg sync.WaitGroup
		start := make(chan struct{})
		for w := range workers {
			wg.Go(func() {
				<-start
				if err := store.Succeed(ctx, job, int64(w+1)); err != nil {
					t.Error(err)
				}
				fin.RowFinal(ctx, job, false)
			})
		}
		close(start)
		wg.Wait()
	}
	if got := counter.puts.Load(); got != 2*jobsN {
		t.Fatalf("%d files put for %d jobs, want %d: results written more than once, or not at all", got, jobsN, 2*jobsN)
	}
	out, err := s3api.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.Resources.ResultsBucket, Key: aws.String(results.Key("race-3", results.FileSucceeded))})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(out.Body)
	if n := strings.Count(body.String(), "\n"); n != workers+1 {
		t.Fatalf("SUCCEEDED.csv has %d lines, want %d:\n%s", n, workers+1, body.String())
	}

	// A replay that completes the job again rewrites both files.
	if _, err := s.Pool.Exec(ctx, `UPDATE bulk_import_row SET state = 'failed', error_code = 'EMPLOYER_NOT_FOUND' WHERE job_id = 'race-0' AND row_no = 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Requeue(ctx, "race-0", []int64{1}); err != nil {
		t.Fatal(err)
	}
	before := counter.puts.Load()
	if err := store.Succeed(ctx, "race-0", 1); err != nil {
		t.Fatal(err)
	}
	fin.RowFinal(ctx, "race-0", false)
	if got := counter.puts.Load() - before; got != 2 {
		t.Fatalf("completing the job again put %d files, want 2", got)
	}
	job, err := store.Job(ctx, "race-0")
	if err != nil || job.Completion != 2 || job.ResultsWritten != 2 {
		t.Fatalf("job %+v, %v", job, err)
	}
}

func TestUnwrittenResultsAreClaimedBySweepOnlyWhenStale(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	store := jobs.NewStore(s.Pool)
	ctx := context.Background()
	record(t, store, "crashed", "fein,email\n123456789,a@b.co\n")
	if err := store.Succeed(ctx, "crashed", 1); err != nil {
		t.Fatal(err)
	}
	// The winner of the completion dies before writing.
	if _, won, err := store.Complete(ctx, "crashed"); err != nil || !won {
		t.Fatalf("complete: %v %v", won, err)
	}
	if _, _, ok, err := store.ClaimUnwrittenResults(ctx, time.Minute); err != nil || ok {
		t.Fatalf("a fresh claim was taken over: %v %v", ok, err)
	}
	if _, err := s.Pool.Exec(ctx, `UPDATE bulk_import_job SET results_claimed_at = now() - interval '10 minutes' WHERE job_id = 'crashed'`); err != nil {
		t.Fatal(err)
	}
	job, completion, ok, err := store.ClaimUnwrittenResults(ctx, time.Minute)
	if err != nil || !ok || job != "crashed" || completion != 1 {
		t.Fatalf("claim: %s %d %v %v", job, completion, ok, err)
	}
	if _, _, ok, _ := store.ClaimUnwrittenResults(ctx, time.Minute); ok {
		t.Fatal("claimed twice")
	}
}
