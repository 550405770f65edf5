package results_test

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/csvrows"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/results"
)

// record records a job from CSV sources, as the splitter does.
func record(t *testing.T, lc *lifecycle.Lifecycle, job string, sources ...string) {
	t.Helper()
	ctx := context.Background()
	if _, _, err := lc.Create(ctx, job, false, jobs.Limits{}); err != nil {
		t.Fatal(err)
	}
	for i, content := range sources {
		name := fmt.Sprintf("/in/%s-%d.csv", job, i)
		r, err := csvrows.NewReader(name, strings.NewReader(content))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lc.RecordSource(ctx, job, name, r.Header(), r); err != nil {
			t.Fatal(err)
		}
	}
	if err := lc.MarkRecorded(ctx, job); err != nil {
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
	lc := lifecycle.New(s.Pool, nil, logging.Discard())
	ctx := context.Background()
	record(t, lc, "j1",
		"fein,email,name\n"+
			"123456789,ok@b.co,Ok\n"+ // row 1: succeeds
			"987654321,gone@b.co,\"=HYPERLINK(\"\"http://x\"\")\"\n"+ // row 2: fails; a formula
			"12x,bad@b.co,Bad\n"+ // row 3: rejected
			"123456789,OK@B.CO,Dup of ok\n"+ // row 4: duplicate of row 1
			"987654321,gone@b.co,Dup of gone\n"+ // row 5: duplicate of row 2
			"555666777,wait@b.co,+1 555\n", // row 6: still queued
		"Name,EMAIL,fein,extra\n"+ // a second file with other columns, in another order
			"Two,two@b.co,123456789,@x\n") // row 7: succeeds
	pgtest.Batch(t, s.Pool, func(b *pgx.Batch) { lc.QueueSucceed(b, "j1", 1); lc.QueueSucceed(b, "j1", 7) })
	if _, err := lc.ClaimFailure(ctx, "j1", 2, "EMPLOYER_NOT_FOUND", "employer: no employer has this FEIN"); err != nil {
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
		"12x|bad@b.co|Bad||||fein: must contain only digits, dashes and spaces|INVALID_FEIN|" + src0 + "|4\n" +
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
	pgtest.Batch(t, s.Pool, func(b *pgx.Batch) { lc.QueueSucceed(b, "j1", 6) })
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

func TestPublisherNeedsABucketAndRefusesPrunedJobs(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	store := jobs.NewStore(s.Pool)
	ctx := context.Background()
	record(t, lifecycle.New(s.Pool, nil, logging.Discard()), "p1", "fein,email\n123456789,a@b.co\n")
	if _, err := (&results.Publisher{Jobs: store}).Write(ctx, "p1", nil); !errors.Is(err, results.ErrNoBucket) {
		t.Fatalf("no bucket: %v", err)
	}
	if _, err := s.Pool.Exec(ctx, `UPDATE bulk_import_job SET pruned_at = now() WHERE job_id = 'p1'`); err != nil {
		t.Fatal(err)
	}
	if _, err := results.WriteDir(ctx, store, "p1", t.TempDir()); !errors.Is(err, jobs.ErrPruned) {
		t.Fatalf("report of a pruned job: %v", err)
	}
}
