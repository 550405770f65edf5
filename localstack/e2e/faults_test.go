package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/localstack/faultproxy"
	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/message"
	"github.com/massgov/bulk-user-import/shared/queue"
)

// deadLetters receives every message of the DLQ, releases them, and
// returns how many each row ("job/row") has.
func deadLetters(t *testing.T, s *stacktest.Stack) map[string]int {
	t.Helper()
	ctx := context.Background()
	q := queue.New(awsconf.SQS(s.AWS), s.Resources.DLQURL)
	out := map[string]int{}
	var handles []string
	for {
		msgs, err := q.Receive(ctx, 10, 0, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			break
		}
		for _, m := range msgs {
			handles = append(handles, m.ReceiptHandle)
			r, err := message.Decode(m.Body)
			if err != nil {
				out["malformed "+m.Attributes[message.AttrErrorCode]]++
				continue
			}
			out[fmt.Sprintf("%s/%d", r.Job, r.Row)]++
		}
	}
	for len(handles) > 0 {
		n := min(len(handles), 10)
		if _, err := q.ChangeVisibilityBatch(ctx, handles[:n], 0); err != nil {
			t.Fatal(err)
		}
		handles = handles[n:]
	}
	return out
}

func TestAReplayMovesEachRowOnceWhileWorkersRun(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	envv := env(s)
	startWorker(t, envv)
	startWorker(t, envv)
	// Three rows fail: two for an employer about to be loaded, one whose
	// FEIN stays unknown.
	file := writeRows(t, "r.csv", "222222222,r1@example.com,R", "222222222,r2@example.com,R", "333333333,r3@example.com,R")
	if r := runBin(t, envv, "splitter", "--wait", "--poll-interval", "200ms", "--job", "once", file); r.Code != 3 {
		t.Fatalf("splitter: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if got := deadLetters(t, s); len(got) != 3 {
		t.Fatalf("DLQ before the replay: %v", got)
	}
	s.AddEmployer(t, "222222222", 0)

	r := runBin(t, envv, "worker", "dlq", "replay", "--job", "once", "--error", "EMPLOYER_NOT_FOUND", "--json")
	var res struct {
		Moved, Later, Duplicates, Errors int
	}
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &res) != nil {
		t.Fatalf("replay: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	// The row still wrong by data failed again during the pass: the pass
	// left it for the next one instead of moving it again.
	if res.Moved != 3 || res.Errors != 0 || res.Duplicates != 0 {
		t.Fatalf("replay moved %+v; want the 3 matching messages, once each", res)
	}
	st := waitDone(t, envv, "once")
	if st["succeeded"] != 2.0 || st["failed"] != 1.0 {
		t.Fatalf("after the replay: %v", st)
	}
	if got := deadLetters(t, s); len(got) != 1 || got["once/3"] != 1 {
		t.Fatalf("DLQ after the replay: %v; want row 3 once", got)
	}
	// A second replay moves it once more, and it comes back once more.
	r = runBin(t, envv, "worker", "dlq", "replay", "--job", "once", "--json")
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &res) != nil || res.Moved != 1 {
		t.Fatalf("second replay: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	waitDone(t, envv, "once")
	if got := deadLetters(t, s); len(got) != 1 || got["once/3"] != 1 {
		t.Fatalf("DLQ after the second replay: %v; want row 3 once", got)
	}
	if n := pgtest.Count(t, s.Pool, `SELECT count(*) FROM bulk_import_row WHERE job_id = 'once' AND state = 'failed' AND dead_letter = 'sent'`); n != 1 {
		t.Fatalf("%d failed rows with their dead letter sent", n)
	}
}

func TestAMissingUserPoolStopsTheWorkerAtStart(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	s.AddEmployer(t, "123456789", 1001)
	envv := env(s)
	if r := runBin(t, envv, "splitter", "--job", "nopool", writeRows(t, "n.csv", generatedRows("nopool", 5)...)); r.Code != 0 {
		t.Fatalf("splitter: %d %s", r.Code, r.Stderr)
	}
	start := time.Now()
	r := runBin(t, append(envv, "COGNITO_USER_POOL_ID=us-east-1_doesnotexist"), "worker")
	if r.Code != 1 || !strings.Contains(r.Stderr, "COGNITO_USER_POOL_ID us-east-1_doesnotexist: no such user pool in us-east-1") {
		t.Fatalf("worker: exit %d after %s\n%s", r.Code, time.Since(start), r.Stderr)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Fatalf("the worker took %s to give up on a definite misconfiguration", took)
	}
	if n := pgtest.Count(t, s.Pool, `SELECT count(*) FROM bulk_import_row WHERE job_id = 'nopool' AND state = 'queued' AND attempts = 0`); n != 5 {
		t.Fatalf("%d of 5 rows untouched", n)
	}
	// FINEOS refusing the credentials at start is a misconfiguration too.
	s.Fineos.RefuseCredentials(true)
	r = runBin(t, envv, "worker")
	if r.Code != 1 || !strings.Contains(r.Stderr, "FINEOS refuses the client credentials (FINEOS_CLIENT_OAUTH2_CLIENT_ID, FINEOS_CLIENT_OAUTH2_CLIENT_SECRET)") {
		t.Fatalf("worker with refused FINEOS credentials: exit %d\n%s", r.Code, r.Stderr)
	}
}

// statusText runs "splitter status JOB".
func statusText(t *testing.T, envv []string, job string) string {
	t.Helper()
	return runBin(t, envv, "splitter", "status", job).Stdout
}

// waitPaused waits until status says the workers are paused on dep.
func waitPaused(t *testing.T, envv []string, job, dep string) string {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out := statusText(t, envv, job)
		if strings.Contains(out, "PAUSED") && strings.Contains(out, dep+" refuses the pipeline") {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never said the workers were paused on %s:\n%s", dep, out)
		}
	}
}

func TestFINEOSRefusingItsCredentialsForHalfAMinuteFailsNoRow(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	s.AddEmployer(t, "123456789", 1001)
	envv := env(s)
	for range 2 {
		waitStarted(t, startWorker(t, envv, "--concurrency", "8"))
	}
	// A secret being rotated: FINEOS refuses the credentials for 30 s.
	s.Fineos.RefuseCredentials(true)
	before := s.Fineos.Stats().TokenRequests
	if r := runBin(t, envv, "splitter", "--job", "rotate", "--force-registration", "--max-failure-ratio", "0.1", "--min-sample", "5",
		writeRows(t, "rot.csv", generatedRows("rotate", 150)...)); r.Code != 0 {
		t.Fatalf("splitter: %d %s", r.Code, r.Stderr)
	}
	out := waitPaused(t, envv, "rotate", "fineos")
	if !strings.Contains(out, "FINEOS_AUTH_FAILED") || !strings.Contains(out, "fix: check FINEOS_CLIENT_OAUTH2_CLIENT_ID") {
		t.Fatalf("status while paused:\n%s", out)
	}
	time.Sleep(30 * time.Second)
	refused := s.Fineos.Stats().TokenRequests - before
	st := status(t, envv, "rotate")
	if st["failed"] != 0.0 || st["cancelled"] != 0.0 || st["succeeded"] != 0.0 {
		t.Fatalf("during the refusal: %v", st)
	}
	s.Fineos.RefuseCredentials(false)
	accepted := time.Now()
	st = waitDone(t, envv, "rotate")
	t.Logf("done %s after FINEOS accepted the credentials again", time.Since(accepted).Round(100*time.Millisecond))
	if st["succeeded"] != 150.0 || st["failed"] != 0.0 {
		t.Fatalf("after the refusal: %v", st)
	}
	// A probe at a time per worker, with backoff: not one request per row.
	t.Logf("%d token requests in 30 s of refusal, by 2 workers with 16 rows in flight", refused)
	if refused > 40 {
		t.Fatalf("%d token requests while FINEOS refused the credentials", refused)
	}
	if got := deadLetters(t, s); len(got) != 0 {
		t.Fatalf("DLQ: %v", got)
	}
	if n := len(s.Fineos.Users()); n != 150 {
		t.Fatalf("%d FINEOS users", n)
	}
	if !strings.Contains(statusText(t, envv, "rotate"), "workers: 2 running\n") {
		t.Fatalf("status after the refusal:\n%s", statusText(t, envv, "rotate"))
	}
}

// cognitoProxy puts a fault proxy in front of the stack's Cognito and
// returns it with the binaries' environment: Cognito through the proxy,
// SQS and S3 straight.
func cognitoProxy(t *testing.T, s *stacktest.Stack, extra ...string) (*faultproxy.Proxy, []string) {
	t.Helper()
	proxy, err := faultproxy.NewAWS(s.EndpointURL)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	return proxy, env(s, append([]string{"AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER=" + srv.URL}, extra...)...)
}

func TestCognitoRefusingTheCredentialsMidRunPausesThenFinishes(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	s.AddEmployer(t, "123456789", 1001)
	proxy, envv := cognitoProxy(t, s)
	w := startWorker(t, envv, "--cognito-get-rate", "10")
	waitStarted(t, w)
	if r := runBin(t, envv, "splitter", "--job", "denied", writeRows(t, "d.csv", generatedRows("denied", 40)...)); r.Code != 0 {
		t.Fatalf("splitter: %d %s", r.Code, r.Stderr)
	}
	time.Sleep(time.Second)
	proxy.Set(faultproxy.Cognito, faultproxy.Faults{Refuse: "AccessDeniedException"})
	out := waitPaused(t, envv, "denied", "cognito")
	if !strings.Contains(out, "COGNITO_ACCESS_DENIED") {
		t.Fatalf("status while paused:\n%s", out)
	}
	time.Sleep(5 * time.Second)
	proxy.Set(faultproxy.Cognito, faultproxy.Faults{})
	st := waitDone(t, envv, "denied")
	if st["succeeded"] != 40.0 || st["failed"] != 0.0 {
		t.Fatalf("after the refusal: %v", st)
	}
	if got := deadLetters(t, s); len(got) != 0 {
		t.Fatalf("DLQ: %v", got)
	}
	for _, want := range []string{`"msg":"paused: cognito refuses the pipeline's requests`, `"msg":"resumed: cognito answers again"`, `"msg":"not receiving while cognito refuses the pipeline"`} {
		if !strings.Contains(w.Output(), want) {
			t.Errorf("the worker's log lacks %s", want)
		}
	}
	if n := strings.Count(w.Output(), `"level":"ERROR"`); n != 1 {
		t.Errorf("%d ERROR lines; want the one that says the worker paused", n)
	}
}
