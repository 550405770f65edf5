// Package motoe2e runs the real devstack, splitter and worker binaries
// against moto_server (SQS, S3, Cognito and SNS in one process) instead of the
// embedded kumo emulator: a second emulator, closer to what LocalStack
// serves, so that the tool's AWS calls are not written to one emulator's
// quirks. The test skips where moto_server is not installed.
package motoe2e

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cip "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/massgov/bulk-user-import/localstack/bootstrap"
	"github.com/massgov/bulk-user-import/localstack/devdb"
	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/localstack/proctest"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/events"
	"github.com/massgov/bulk-user-import/shared/results"
)

const skipMessage = "moto_server is not in PATH: install moto 5 with its server (pip install 'moto[server]') to run the moto end-to-end test"

var binDir string

func TestMain(m *testing.M) {
	if _, err := exec.LookPath("moto_server"); err != nil {
		os.Exit(m.Run()) // the test skips; building the binaries would be wasted
	}
	os.Exit(proctest.Main(m, &binDir, "splitter", "worker", "localstack/devstack"))
}

// bin is the path of a built binary: splitter, worker or devstack.
func bin(name string) string {
	if name == "devstack" {
		name = "localstack/devstack"
	}
	return filepath.Join(binDir, name)
}

// startMoto starts moto_server on a free port, waits until it answers and
// returns its URL; it is killed at the end of the test. Every test gets
// its own server: moto's state is the process's.
func startMoto(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("moto_server")
	if err != nil {
		t.Skip(skipMessage)
	}
	for attempt := 0; ; attempt++ {
		port := freePort(t)
		url := "http://127.0.0.1:" + port
		cmd := exec.Command(path, "-H", "127.0.0.1", "-p", port)
		out := &proctest.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a wrapper script's children die with it
		dieWithParent(cmd.SysProcAttr)
		if err := cmd.Start(); err != nil {
			t.Fatalf("start moto_server: %v", err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		stop := func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if waitAnswers(url, done, 60*time.Second) {
			t.Cleanup(stop)
			return url
		}
		stop()
		// Another process may have taken the port between our probe and
		// moto's bind: try another one, a few times.
		if attempt == 2 {
			t.Fatalf("moto_server did not answer at %s:\n%s", url, out.String())
		}
	}
}

// waitAnswers polls url until it answers, the process ends, or the
// deadline passes.
func waitAnswers(url string, exited <-chan struct{}, within time.Duration) bool {
	client := &http.Client{Timeout: 2 * time.Second}
	for deadline := time.Now().Add(within); time.Now().Before(deadline); {
		if resp, err := client.Get(url + "/moto-api/data.json"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		select {
		case <-exited:
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
	return false
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// devstackBootstrap creates the stack's AWS resources with the devstack
// binary, as a developer does against LocalStack, and checks that running
// it again changes nothing.
func devstackBootstrap(t *testing.T, endpoint string) func(context.Context, bootstrap.Spec) (bootstrap.Resources, error) {
	return func(ctx context.Context, spec bootstrap.Spec) (bootstrap.Resources, error) {
		envv := proctest.Env(map[string]string{
			"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": spec.Region,
			"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
		})
		args := []string{"bootstrap", "--queue", spec.QueueName, "--dlq", spec.DLQName,
			"--max-receive-count", strconv.Itoa(spec.MaxReceiveCount), "--visibility-timeout", spec.VisibilityTimeout.String(),
			"--results-bucket", spec.ResultsBucket, "--source-bucket", spec.SourceBucket, "--user-pool", spec.UserPoolName,
			"--completion-topic", spec.CompletionTopic, "--completion-queue", spec.CompletionQueue}
		first := proctest.Run(t, bin("devstack"), envv, args...)
		if first.Code != 0 {
			return bootstrap.Resources{}, fmt.Errorf("devstack bootstrap: exit %d: %s", first.Code, first.Stderr)
		}
		again := proctest.Run(t, bin("devstack"), envv, args...)
		if again.Code != 0 || again.Stdout != first.Stdout {
			return bootstrap.Resources{}, fmt.Errorf("devstack bootstrap a second time: exit %d, output\n%s\nfirst\n%s\n%s", again.Code, again.Stdout, first.Stdout, again.Stderr)
		}
		env, err := parseExports(first.Stdout)
		if err != nil {
			return bootstrap.Resources{}, err
		}
		res := bootstrap.Resources{
			QueueURL: env["IMPORT_QUEUE_URL"], DLQURL: env["IMPORT_DLQ_URL"], UserPoolID: env["COGNITO_USER_POOL_ID"],
			ResultsBucket: env["RESULTS_BUCKET"], SourceBucket: env["SOURCE_BUCKET"],
			CompletionTopicARN: env["DEMO_COMPLETION_SNS_TOPIC_ARN"], CompletionQueueURL: env["DEMO_COMPLETION_QUEUE_URL"],
		}
		if res.QueueURL == "" || res.DLQURL == "" || res.UserPoolID == "" || res.ResultsBucket != spec.ResultsBucket {
			return res, fmt.Errorf("devstack bootstrap printed an incomplete environment:\n%s", first.Stdout)
		}
		return res, nil
	}
}

var exportLine = regexp.MustCompile(`^export ([A-Z0-9_]+)='((?:[^']|'\\'')*)'$`)

// parseExports reads bootstrap.Exports' lines.
func parseExports(out string) (map[string]string, error) {
	env := map[string]string{}
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		m := exportLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("devstack bootstrap: unexpected line %q", line)
		}
		env[m[1]] = strings.ReplaceAll(m[2], `'\''`, "'")
	}
	return env, nil
}

// The import file's people. Every email's local part is distinctive, so
// that finding one in an output is a leak and nothing else.
const (
	// Seeded employers (not 123456789: moto's account id, in every queue
	// URL, is 123456789012).
	feinFirst   = "045678901" // seeded: Cape Cod Kayaks, FINEOS party 1003
	feinSecond  = "555666777" // seeded: Pioneer Valley Pediatrics, FINEOS party 1005
	feinMissing = "246813579" // not in the database until the operator adds it
)

func email(kind string, i int) string {
	return fmt.Sprintf("motola-%s%02d@moto-probe.example", kind, i)
}

// importFile is the 100-row file and what the splitter and the workers
// must make of it.
type importFile struct {
	csv      string
	rejected map[int]string // line -> code
	failing  []int          // lines of the rows whose employer is missing
	// Expected outcomes.
	users, links, succeeded, failed, duplicates int
	missing                                     []string // emails of the rows whose employer is missing
}

// buildImport writes 100 rows: 78 people at one of two employers, 5 of
// them again at the other employer, 3 duplicates that differ only in case,
// 10 rows whose employer is not in the database, 2 invalid emails and 2
// invalid FEINs. The bad rows are spread through the file; the rows of
// people at a second employer come last, far from their first rows (moto's
// AdminCreateUser is a check, then an insert, without a lock: see
// localstack/README.md).
func buildImport() importFile {
	f := importFile{rejected: map[int]string{}}
	type row struct{ fein, email, name, code string }
	var rows []row
	for i := range 78 {
		fein := feinFirst
		if i%2 == 1 {
			fein = feinSecond
		}
		rows = append(rows, row{fein: fein, email: email("admin", i), name: fmt.Sprintf("Admin %d", i)})
		switch {
		case i%8 == 3 && len(f.missing) < 10:
			rows = append(rows, row{fein: feinMissing, email: email("missing", len(f.missing)), name: "Missing employer"})
			f.missing = append(f.missing, email("missing", len(f.missing)))
		case i == 20 || i == 50:
			rows = append(rows, row{fein: feinFirst, email: fmt.Sprintf("motola-bad%d@@moto-probe.example", i), name: "Bad email", code: "INVALID_EMAIL"})
		case i == 30 || i == 60:
			// Ten digits, and a letter (fewer than nine digits are zero-padded, as spreadsheets drop leading zeros).
			fein := map[int]string{30: "12-34567890", 60: "12-34S6789"}[i]
			rows = append(rows, row{fein: fein, email: email("badfein", i), name: "Bad FEIN", code: "INVALID_FEIN"})
		case i == 40 || i == 41 || i == 42:
			// The same person and employer as the row above, in capitals.
			rows = append(rows, row{fein: rows[len(rows)-1].fein, email: strings.ToUpper(email("admin", i)), name: "Duplicate"})
		}
	}
	for i := range 5 {
		fein := feinSecond // admin 0, 2, 4, 6, 8 are at feinFirst
		rows = append(rows, row{fein: fein, email: email("admin", 2*i), name: "Second employer"})
	}
	var b strings.Builder
	b.WriteString("fein,email,name\n")
	for i, r := range rows {
		fmt.Fprintf(&b, "%s,%s,%s\n", r.fein, r.email, r.name)
		if r.code != "" {
			f.rejected[i+2] = r.code
		}
		if r.fein == feinMissing {
			f.failing = append(f.failing, i+2)
		}
	}
	f.csv = b.String()
	f.users, f.links, f.duplicates = 78+10, 78+5+10, 3
	f.succeeded, f.failed = 78+5, 10
	if len(rows) != 100 || len(f.missing) != 10 || len(f.failing) != 10 || len(f.rejected) != 4 {
		panic(fmt.Sprintf("buildImport: %d rows, %d missing, %d rejected", len(rows), len(f.missing), len(f.rejected)))
	}
	return f
}

func TestMotoEndToEnd(t *testing.T) {
	t.Parallel()
	endpoint := startMoto(t)
	started := time.Now()
	s := stacktest.New(t, stacktest.Options{
		Endpoint: endpoint, Bootstrap: devstackBootstrap(t, endpoint),
		MaxReceiveCount: 3, VisibilityTimeout: 30 * time.Second,
	})
	ctx := context.Background()
	if err := devdb.Seed(ctx, s.Pool); err != nil { // the sample employers, feinFirst and feinSecond among them
		t.Fatal(err)
	}
	checkBootstrap(t, s)
	last := started
	stage := func(name string) {
		t.Logf("%-40s %6.1fs", name, time.Since(last).Seconds())
		last = time.Now()
	}
	stage("moto, bootstrap and database ready")

	f := buildImport()
	file := filepath.Join(t.TempDir(), "admins.csv")
	if err := os.WriteFile(file, []byte(f.csv), 0o600); err != nil {
		t.Fatal(err)
	}
	// Everything the splitter and the workers printed, searched for
	// personal data at the end (devstack, a development tool, is not).
	var outputs []string
	// The workers announce each completion on the SNS topic bootstrap made;
	// moto delivers it to the subscribed queue.
	envv := proctest.Env(s.Env(), "LOG_FORMAT=json", "COMPLETION_SNS_TOPIC_ARN="+s.Resources.CompletionTopicARN)
	run := func(name string, args ...string) proctest.Result {
		t.Helper()
		r := proctest.Run(t, bin(name), envv, args...)
		if name != "devstack" {
			outputs = append(outputs, fmt.Sprintf("== %s %s\n%s%s", name, args[0], r.Stdout, r.Stderr))
		}
		return r
	}
	workers := []*proctest.Proc{startWorker(t, envv), startWorker(t, envv)}

	// 1. The import: two workers; rejected rows named by line, the unknown
	// employer's rows failed.
	r := run("splitter", "--force-registration", "--wait", "--poll-interval", "200ms", "--job", "moto-1", file)
	want := fmt.Sprintf("job moto-1 done: 100 rows: %d succeeded, %d failed, 4 rejected, 3 duplicate, 0 cancelled", f.succeeded, f.failed)
	if r.Code != 3 || !strings.Contains(r.Stdout, want) {
		t.Fatalf("splitter: exit %d, want 3 and %q\nstdout:\n%s\nstderr:\n%s", r.Code, want, r.Stdout, r.Stderr)
	}
	for line, code := range f.rejected {
		if !regexp.MustCompile(fmt.Sprintf(`admins\.csv:%d\s+rejected\s+%s`, line, code)).MatchString(r.Stdout) {
			t.Errorf("the summary does not name line %d as %s:\n%s", line, code, r.Stdout)
		}
	}
	if n := strings.Count(r.Stdout, "EMPLOYER_NOT_FOUND"); n != f.failed {
		t.Errorf("the summary lists %d EMPLOYER_NOT_FOUND rows, want %d:\n%s", n, f.failed, r.Stdout)
	}
	for _, line := range f.failing {
		if !regexp.MustCompile(fmt.Sprintf(`admins\.csv:%d\s+failed\s+EMPLOYER_NOT_FOUND`, line)).MatchString(r.Stdout) {
			t.Errorf("the summary does not name line %d as EMPLOYER_NOT_FOUND:\n%s", line, r.Stdout)
		}
	}
	waitDone(t, envv, "moto-1")
	checkResultFiles(t, s, f, "moto-1", f.succeeded+f.duplicates, f.failed+4)

	stage("first import done, files checked")

	// 2. The dead-letter queue holds the failed rows, once each.
	waitDLQ(t, envv, map[string]int{"EMPLOYER_NOT_FOUND": f.failed})
	r = run("worker", "dlq", "list")
	if r.Code != 0 || !strings.Contains(r.Stdout, "EMPLOYER_NOT_FOUND") {
		t.Fatalf("dlq list: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}

	stage("dead letters listed")

	// 3. The operator adds the employer and replays.
	r = run("devstack", "employer", "--fein", feinMissing, "--fineos-id", "1009", "--name", "Late Employer")
	if r.Code != 0 {
		t.Fatalf("devstack employer: exit %d %s", r.Code, r.Stderr)
	}
	r = run("worker", "dlq", "replay", "--job", "moto-1", "--error", "EMPLOYER_NOT_FOUND")
	if r.Code != 0 || !strings.Contains(r.Stdout, fmt.Sprintf("replay: %d moved, 0 skipped, 0 errors", f.failed)) {
		t.Fatalf("dlq replay: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		st := status(t, envv, "moto-1")
		if st["succeeded"] == float64(f.succeeded+f.failed) && st["done"] == true && st["results"] == "written" {
			if st["failed"] != 0.0 || st["queued"] != 0.0 {
				t.Fatalf("after the replay: %v", st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replayed rows did not succeed within a minute: %v\nworker logs:\n%s\n%s", st, workers[0].Output(), workers[1].Output())
		}
	}
	waitDLQ(t, envv, map[string]int{})
	// The completion after the replay rewrites both files.
	for deadline := time.Now().Add(30 * time.Second); len(s3CSV(t, s, results.Key("moto-1", results.FileSucceeded))) != 1+f.succeeded+f.failed+f.duplicates; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("SUCCEEDED.csv was not rewritten after the replay")
		}
	}
	checkResultFiles(t, s, f, "moto-1", f.succeeded+f.failed+f.duplicates, 4)
	checkRegistered(t, s, f)
	before := counts(t, s)
	stage("replayed, files rewritten, systems checked")

	// 4. Running the same job again reads nothing and sends nothing; the
	// same file as a new job (read from S3 this time) creates nothing new
	// anywhere.
	r = run("splitter", "--job", "moto-1", "--force-registration", file)
	if r.Code != 0 || !strings.Contains(r.Stdout, "already recorded") || !strings.Contains(r.Stdout, "sent 0 messages") {
		t.Fatalf("re-run of the job: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	// The second import reads the file from moto's S3, from the source bucket bootstrap made.
	if _, err := awsconf.S3(s.AWS).PutObject(ctx, &s3.PutObjectInput{Bucket: &s.Resources.SourceBucket, Key: aws.String("incoming/admins.csv"),
		Body: strings.NewReader(f.csv)}); err != nil {
		t.Fatal(err)
	}
	r = run("splitter", "--force-registration", "--wait", "--poll-interval", "200ms", "--job", "moto-2", "s3://"+s.Resources.SourceBucket+"/incoming/admins.csv")
	want = fmt.Sprintf("job moto-2 done: 100 rows: %d succeeded, 0 failed, 4 rejected, 3 duplicate, 0 cancelled", f.succeeded+f.failed)
	if r.Code != 3 || !strings.Contains(r.Stdout, want) {
		t.Fatalf("second import: exit %d, want 3 and %q\n%s\n%s", r.Code, want, r.Stdout, r.Stderr)
	}
	waitDone(t, envv, "moto-2")
	checkResultFiles(t, s, f, "moto-2", f.succeeded+f.failed+f.duplicates, 4)
	if after := counts(t, s); after != before {
		t.Fatalf("the second import of the same file changed things:\nbefore %+v\nafter  %+v", before, after)
	}
	for _, job := range []string{"moto-1", "moto-2"} {
		r = run("splitter", "status", job)
		if r.Code != 0 {
			t.Fatalf("status %s: exit %d %s", job, r.Code, r.Stderr)
		}
	}
	stage("second import done, nothing new")
	checkEvents(t, s, envv, f)
	stage("completion events read")

	// 5. At rest: the workers stop cleanly, every row is final, the counts
	// agree, both queues are empty, and nothing printed names anyone.
	for i, w := range workers {
		if _, stopped, err := w.Stop(40 * time.Second); !stopped || err != nil {
			t.Fatalf("worker %d did not stop cleanly: %v\n%s", i, err, w.Output())
		}
		outputs = append(outputs, "== worker\n"+w.Output())
		// moto reports the pool's CaseSensitive=false as set (it does not
		// apply it), so the worker's start-up check does not warn; and
		// nothing went wrong enough to log an error.
		if strings.Contains(w.Output(), "usernames are case-sensitive") || strings.Contains(w.Output(), `"level":"ERROR"`) {
			t.Errorf("worker %d logged a warning about the pool or an error:\n%s", i, w.Output())
		}
	}
	checkAtRest(t, s, f)
	for _, out := range outputs {
		label, _, _ := strings.Cut(out, "\n")
		if found := leaks(out, f); len(found) > 0 {
			t.Errorf("%s: personal data in clear: %v\n%s", label, found, out)
		}
	}
	stage("workers stopped, checked at rest")
	t.Logf("done in %s", time.Since(started).Round(time.Millisecond))
}

// checkBootstrap reads back what devstack bootstrap made: the redrive
// policy, the DLQ, the buckets and the pool.
func checkBootstrap(t *testing.T, s *stacktest.Stack) {
	t.Helper()
	ctx := context.Background()
	q, err := awsconf.SQS(s.AWS).GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: &s.Resources.QueueURL, AttributeNames: []sqstypes.QueueAttributeName{"RedrivePolicy", "VisibilityTimeout"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var policy struct {
		Target string          `json:"deadLetterTargetArn"`
		Max    json.RawMessage `json:"maxReceiveCount"`
	}
	if err := json.Unmarshal([]byte(q.Attributes["RedrivePolicy"]), &policy); err != nil || !strings.HasSuffix(policy.Target, ":"+s.Spec.DLQName) ||
		strings.Trim(string(policy.Max), `"`) != "3" || q.Attributes["VisibilityTimeout"] != "30" {
		t.Fatalf("import queue attributes: %v (%v)", q.Attributes, err)
	}
	for _, b := range []string{s.Spec.ResultsBucket, s.Spec.SourceBucket} {
		if _, err := awsconf.S3(s.AWS).HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(b)}); err != nil {
			t.Fatalf("bucket %s: %v", b, err)
		}
	}
	p, err := awsconf.Cognito(s.AWS).DescribeUserPool(ctx, &cip.DescribeUserPoolInput{UserPoolId: &s.Resources.UserPoolID})
	if err != nil || aws.ToString(p.UserPool.Name) != s.Spec.UserPoolName || !slices.Contains(p.UserPool.UsernameAttributes, "email") {
		t.Fatalf("user pool: %+v %v", p, err)
	}
}

// startWorker starts a worker with quick timings; it is stopped at the end
// of the test if it still runs.
func startWorker(t *testing.T, envv []string) *proctest.Proc {
	t.Helper()
	p, err := proctest.Start(bin("worker"), envv, "--wait-time", "1s", "--retry-base", "1s", "--retry-max", "2s",
		"--concurrency", "4", "--maintain-interval", "250ms", "--leader-lease", "3s", "--breaker-probe-max", "4s")
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

// status runs "splitter status JOB --json".
func status(t *testing.T, envv []string, job string) map[string]any {
	t.Helper()
	r := proctest.Run(t, bin("splitter"), envv, "status", job, "--json")
	var st map[string]any
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &st) != nil {
		t.Fatalf("status %s: exit %d %s %s", job, r.Code, r.Stdout, r.Stderr)
	}
	return st
}

// waitDone polls until the job is done and its result files written.
func waitDone(t *testing.T, envv []string, job string) map[string]any {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		st := status(t, envv, job)
		if st["done"] == true && st["results"] == "written" {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s not done with its files written in a minute: %v", job, st)
		}
	}
}

// waitDLQ polls "worker dlq list --json" until it counts want by code (a
// failed row's dead letter follows its final state within moments).
func waitDLQ(t *testing.T, envv []string, want map[string]int) {
	t.Helper()
	var got map[string]int
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		r := proctest.Run(t, bin("worker"), envv, "dlq", "list", "--json")
		var l struct {
			Matching int `json:"matching"`
			Rows     int `json:"rows"`
			Groups   []struct {
				Code  string `json:"error_code"`
				Count int    `json:"count"`
			} `json:"groups"`
		}
		if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &l) != nil {
			t.Fatalf("dlq list: exit %d %s %s", r.Code, r.Stdout, r.Stderr)
		}
		got = map[string]int{}
		for _, g := range l.Groups {
			got[g.Code] = g.Count
		}
		if l.Rows != l.Matching {
			got["(distinct rows)"] = l.Rows // SQS holds a dead letter twice
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters by code: %v, want %v", got, want)
		}
	}
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
		t.Fatalf("%s: %v", key, err)
	}
	return rows
}

// checkResultFiles reads the job's files back from the results bucket:
// the counts, the columns, every rejected line in FAILED.csv, and no one's
// email or FEIN outside the row's own cells (the error column is masked).
func checkResultFiles(t *testing.T, s *stacktest.Stack, f importFile, job string, succeeded, failed int) {
	t.Helper()
	ok := s3CSV(t, s, results.Key(job, results.FileSucceeded))
	bad := s3CSV(t, s, results.Key(job, results.FileFailed))
	if len(ok)-1 != succeeded || len(bad)-1 != failed {
		t.Fatalf("%s: SUCCEEDED.csv has %d rows, FAILED.csv %d; want %d and %d", job, len(ok)-1, len(bad)-1, succeeded, failed)
	}
	if h := strings.Join(ok[0], ","); h != "fein,email,name" {
		t.Errorf("SUCCEEDED.csv columns: %s", h)
	}
	if h := strings.Join(bad[0], ","); h != "fein,email,name,error,error_code,source,line" {
		t.Fatalf("FAILED.csv columns: %s", h)
	}
	lines := map[int]string{}
	for _, row := range bad[1:] {
		line, _ := strconv.Atoi(row[6])
		lines[line] = row[4]
		if found := leaks(row[3], f); len(found) > 0 || strings.Contains(row[3], row[1]) {
			t.Errorf("FAILED.csv line %d: the error names someone in clear: %q", line, row[3])
		}
	}
	for line, code := range f.rejected {
		if lines[line] != code {
			t.Errorf("FAILED.csv: line %d has code %q, want %s", line, lines[line], code)
		}
	}
	if failed > len(f.rejected) { // before the replay
		for _, line := range f.failing {
			if lines[line] != "EMPLOYER_NOT_FOUND" {
				t.Errorf("FAILED.csv: line %d has code %q, want EMPLOYER_NOT_FOUND", line, lines[line])
			}
		}
	}
}

// checkRegistered checks every system after the replay: one Cognito user
// per lower-cased email, none with capitals; the PFML users and links;
// one FINEOS user per link.
func checkRegistered(t *testing.T, s *stacktest.Stack, f importFile) {
	t.Helper()
	c := counts(t, s)
	if c.cognito != f.users || c.users != f.users || c.links != f.links || c.roles != f.users || c.fineos != f.links {
		t.Fatalf("registered: %+v; want %d users (Cognito, PFML, roles) and %d links (PFML, FINEOS)", c, f.users, f.links)
	}
	ctx := context.Background()
	api := awsconf.Cognito(s.AWS)
	for _, e := range []string{email("admin", 40), email("missing", 3)} {
		u, err := api.AdminGetUser(ctx, &cip.AdminGetUserInput{UserPoolId: &s.Resources.UserPoolID, Username: aws.String(e)})
		if err != nil || u.UserStatus != "CONFIRMED" {
			t.Fatalf("cognito %s: %+v %v", e, u, err)
		}
	}
	// moto filters ListUsers by attribute, case-sensitively: no user was
	// created under a capitalised duplicate's email.
	out, err := api.ListUsers(ctx, &cip.ListUsersInput{UserPoolId: &s.Resources.UserPoolID,
		Filter: aws.String(fmt.Sprintf("email = %q", strings.ToUpper(email("admin", 40))))})
	if err != nil || len(out.Users) != 0 {
		t.Fatalf("users under the capitalised email: %d %v", len(out.Users), err)
	}
	// Every PFML user row holds the sub of the Cognito user of its email;
	// the user's Username is a UUID, as in AWS (kumo keeps the email), so
	// the import works without ever reading it.
	rows, err := s.Pool.Query(ctx, `SELECT email_address, coalesce(sub_id::text, '') FROM "user"`)
	if err != nil {
		t.Fatal(err)
	}
	subs := map[string]string{}
	for rows.Next() {
		var e, sub string
		if err := rows.Scan(&e, &sub); err != nil {
			t.Fatal(err)
		}
		subs[e] = sub
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for e, sub := range subs {
		u, err := api.AdminGetUser(ctx, &cip.AdminGetUserInput{UserPoolId: &s.Resources.UserPoolID, Username: aws.String(e)})
		if err != nil {
			t.Fatalf("cognito user of a PFML user: %v", err)
		}
		var got string
		for _, a := range u.UserAttributes {
			if aws.ToString(a.Name) == "sub" {
				got = aws.ToString(a.Value)
			}
		}
		if got == "" || got != sub || aws.ToString(u.Username) == e {
			t.Fatalf("PFML user row has sub %q, its Cognito user %q (username %q)", sub, got, aws.ToString(u.Username))
		}
	}
	var unlinked int
	if err := s.Pool.QueryRow(ctx, `SELECT count(*) FROM link_user_leave_administrator WHERE coalesce(fineos_web_id, '') = ''`).Scan(&unlinked); err != nil || unlinked != 0 {
		t.Fatalf("%d links without a FINEOS web id (%v)", unlinked, err)
	}
}

// stackCounts are what an import creates, in every system.
type stackCounts struct {
	cognito, users, links, roles, fineos int
}

func counts(t *testing.T, s *stacktest.Stack) stackCounts {
	t.Helper()
	ctx := context.Background()
	var c stackCounts
	api := awsconf.Cognito(s.AWS)
	p := cip.NewListUsersPaginator(api, &cip.ListUsersInput{UserPoolId: &s.Resources.UserPoolID, Limit: aws.Int32(60)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatalf("list users: %v", err)
		}
		c.cognito += len(page.Users)
	}
	c.users = pgtest.Count(t, s.Pool, `SELECT count(*) FROM "user"`)
	c.links = pgtest.Count(t, s.Pool, `SELECT count(*) FROM link_user_leave_administrator`)
	c.roles = pgtest.Count(t, s.Pool, `SELECT count(*) FROM link_user_role`)
	c.fineos = len(s.Fineos.Users())
	return c
}

// checkAtRest checks the invariants once the workers have stopped: every
// row final, the rows' states agreeing with the jobs' counts and the
// files, both queues empty.
func checkAtRest(t *testing.T, s *stacktest.Stack, f importFile) {
	t.Helper()
	if n := pgtest.Count(t, s.Pool, `SELECT count(*) FROM bulk_import_row WHERE state = 'queued'`); n != 0 {
		t.Errorf("%d rows not final", n)
	}
	for _, job := range []string{"moto-1", "moto-2"} {
		got := map[string]int{}
		rows, err := s.Pool.Query(context.Background(), `SELECT state, count(*) FROM bulk_import_row WHERE job_id = $1 GROUP BY state`, job)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var state string
			var n int
			if err := rows.Scan(&state, &n); err != nil {
				t.Fatal(err)
			}
			got[state] = n
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		want := map[string]int{"succeeded": f.succeeded + f.failed, "rejected": 4, "duplicate": 3}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("job %s rows by state: %v, want %v", job, got, want)
		}
	}
	api := awsconf.SQS(s.AWS)
	for _, q := range []string{s.Resources.QueueURL, s.Resources.DLQURL} {
		out, err := api.GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{QueueUrl: &q,
			AttributeNames: []sqstypes.QueueAttributeName{"ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"}})
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range out.Attributes {
			if v != "0" {
				t.Errorf("%s: %s = %s at rest", q, k, v)
			}
		}
	}
	if c := counts(t, s); c.cognito != f.users || c.links != f.links {
		t.Errorf("at rest: %+v", c)
	}
}

// leaks returns the emails' distinctive parts and the FEINs found in out.
func leaks(out string, f importFile) []string {
	lower := strings.ToLower(out)
	var found []string
	for _, p := range regexp.MustCompile(`motola-[a-z]+\d+`).FindAllString(strings.ToLower(f.csv), -1) {
		if strings.Contains(lower, p) && !slices.Contains(found, p) {
			found = append(found, p)
		}
	}
	for _, fein := range []string{feinFirst, feinSecond, feinMissing} {
		if strings.Contains(out, fein) || strings.Contains(out, fein[:2]+"-"+fein[2:]) {
			found = append(found, fein)
		}
	}
	return found
}

// checkEvents waits until both jobs' latest completion events are sent,
// then reads the receiver queue: one event per completion (moto-1 twice:
// the import and the replay; moto-2 once), their counts those of the
// jobs, and no one named in them.
func checkEvents(t *testing.T, s *stacktest.Stack, envv []string, f importFile) {
	t.Helper()
	want := map[string]map[string]any{}
	for _, job := range []string{"moto-1", "moto-2"} {
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			st := status(t, envv, job)
			if st["event"] == "sent" {
				want[st["event_id"].(string)] = st
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("job %s: completion event %v", job, st["event"])
			}
		}
	}
	if _, ok := want["moto-1/2"]; !ok || want["moto-2/1"] == nil {
		t.Fatalf("latest events: %v", slices.Collect(maps.Keys(want)))
	}
	ctx := context.Background()
	q := awsconf.SQS(s.AWS)
	got := map[string]events.Event{}
	for deadline := time.Now().Add(30 * time.Second); len(got) < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("completion events received: %v, want moto-1/1, moto-1/2 and moto-2/1", slices.Collect(maps.Keys(got)))
		}
		out, err := q.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &s.Resources.CompletionQueueURL, MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range out.Messages {
			var e events.Event
			if err := json.Unmarshal([]byte(aws.ToString(m.Body)), &e); err != nil {
				t.Fatalf("not an event: %q: %v", aws.ToString(m.Body), err)
			}
			if _, dup := got[e.EventID]; dup {
				t.Errorf("event %s received twice", e.EventID)
			}
			got[e.EventID] = e
			if found := leaks(aws.ToString(m.Body), f); len(found) > 0 {
				t.Errorf("event %s names %v", e.EventID, found)
			}
			if _, err := q.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &s.Resources.CompletionQueueURL, ReceiptHandle: m.ReceiptHandle}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if e := got["moto-1/1"]; e.Counts.Failed != int64(f.failed) || e.FailuresByCode["EMPLOYER_NOT_FOUND"] != int64(f.failed) {
		t.Errorf("the first completion's event: %+v", e)
	}
	for id, st := range want {
		e := got[id]
		if e.Counts.Total != 100 || float64(e.Counts.Succeeded) != st["succeeded"] || e.Counts.Failed != 0 || e.Counts.Rejected != 4 ||
			e.Counts.Duplicate != 3 || e.Results.State != "written" || len(e.Results.Files) != 2 {
			t.Errorf("event %s: %+v; status %v", id, e, st)
		}
	}
}
