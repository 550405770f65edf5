// Package chaos imports a CSV through real worker processes while it kills
// and stops them at random, restarts PostgreSQL, and injects faults into
// every SQS, Cognito and FINEOS call; then it checks that every row ended
// right, and that nothing was registered twice.
//
// Knobs (environment): BUI_CHAOS_ROWS (default 400; make chaos uses 2500),
// BUI_CHAOS_TIMEOUT (default 5m), BUI_CHAOS_SEED (default: random, printed).
package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cip "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/localstack/bootstrap"
	"github.com/massgov/bulk-user-import/localstack/devdb"
	"github.com/massgov/bulk-user-import/localstack/faultproxy"
	"github.com/massgov/bulk-user-import/localstack/fineosstub"
	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/localstack/proctest"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/message"
	"github.com/massgov/bulk-user-import/shared/queue"
	"github.com/massgov/bulk-user-import/shared/register"
)

var binDir string

func TestMain(m *testing.M) { os.Exit(proctest.Main(m, &binDir, "splitter", "worker")) }

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// dataset is a generated CSV and the outcome each row must reach.
type dataset struct {
	csv       string
	rows      int
	succeed   map[int]string  // row number -> "email/fein" of rows that must succeed
	fail      map[int]string  // row number -> error code of rows wrong by data
	rejected  int             // rows refused by validation
	duplicate int             // repeated pairs
	pairs     map[string]bool // "email/fein" registered
	emails    map[string]bool // emails that must have a Cognito user
	noUser    map[string]bool // emails only in failed rows: no Cognito user
}

const (
	employers      = 25
	firstFEIN      = 100000001
	noFineosFEIN   = "199999999"
	unknownFEINs   = 900000001
	firstFineosID  = 5001
	emailsPerBatch = 3
)

// generate writes n rows: admins with one to three employers, and a share
// of rows that are wrong by data (unknown FEIN, employer not in FINEOS),
// invalid (rejected) or repeated (duplicates).
func generate(rng *rand.Rand, n int) dataset {
	d := dataset{succeed: map[int]string{}, fail: map[int]string{}, pairs: map[string]bool{}, emails: map[string]bool{}, noUser: map[string]bool{}}
	var b strings.Builder
	b.WriteString("fein,email,first_name\n")
	var seen []string
	failedOnly := map[string]bool{}
	failPairs := map[string]bool{}
	for row := 1; row <= n; row++ {
		email := fmt.Sprintf("admin%d@example%d.com", row/emailsPerBatch, rng.IntN(3))
		fein := strconv.Itoa(firstFEIN + rng.IntN(employers))
		x := rng.Float64()
		switch {
		case x < 0.03:
			code := register.CodeEmployerNotFound
			fein = strconv.Itoa(unknownFEINs + rng.IntN(5))
			if x < 0.01 {
				code, fein = register.CodeFineosEmployerMissing, noFineosFEIN
			}
			if failPairs[email+"/"+fein] {
				d.duplicate++ // the same wrong pair again: a duplicate, not a second failure
				break
			}
			failPairs[email+"/"+fein] = true
			d.fail[row] = code
		case x < 0.05:
			email = "not-an-email-" + strconv.Itoa(row)
			d.rejected++
		case x < 0.06:
			fein = "12x"
			d.rejected++
		case x < 0.09 && len(seen) > 0:
			pair := seen[rng.IntN(len(seen))]
			email, fein, _ = strings.Cut(pair, "/")
			if row%2 == 0 {
				email = strings.ToUpper(email) // still the same pair once normalised
			}
			d.duplicate++
		default:
			pair := email + "/" + fein
			if d.pairs[pair] {
				d.duplicate++
				break
			}
			d.pairs[pair] = true
			d.succeed[row] = pair
			d.emails[email] = true
			seen = append(seen, pair)
		}
		if _, failing := d.fail[row]; failing {
			failedOnly[email] = true
		}
		fmt.Fprintf(&b, "%s,%s,Name %d\n", fein, email, row)
	}
	for e := range failedOnly {
		if !d.emails[e] {
			d.noUser[e] = true
		}
	}
	d.csv, d.rows = b.String(), n
	return d
}

func TestChaos(t *testing.T) {
	rows := envInt("BUI_CHAOS_ROWS", 400)
	timeout := time.Duration(envInt("BUI_CHAOS_TIMEOUT_SECONDS", 300)) * time.Second
	seed := uint64(envInt("BUI_CHAOS_SEED", int(time.Now().UnixNano()%1e9)))
	t.Logf("chaos: %d rows, seed %d (BUI_CHAOS_SEED=%d reproduces the data and the schedule)", rows, seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	data := generate(rng, rows)
	ctx := context.Background()

	// PostgreSQL of our own, so that restarting it disturbs no other test.
	pg := pgtest.StartServer(t)
	dbURL := pg.Database(t, "chaos")
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := devdb.ApplySchema(ctx, pool); err != nil {
		t.Fatal(err)
	}
	for i := range employers {
		if _, err := pool.Exec(ctx, `INSERT INTO employer (employer_id, employer_fein, fineos_employer_id) VALUES (gen_random_uuid(), $1, $2)`,
			strconv.Itoa(firstFEIN+i), firstFineosID+i); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, `INSERT INTO employer (employer_id, employer_fein) VALUES (gen_random_uuid(), $1)`, noFineosFEIN); err != nil {
		t.Fatal(err)
	}

	// The emulator and the FINEOS stub, each behind a fault proxy.
	emu := stacktest.Emulator(t)
	direct := stacktest.AWSConfig(t, emu.URL)
	awsProxy, err := faultproxy.NewAWS(emu.URL)
	if err != nil {
		t.Fatal(err)
	}
	awsSrv := httptest.NewServer(awsProxy)
	defer awsSrv.Close()
	stub := fineosstub.New(fineosstub.DefaultOptions())
	stubSrv := httptest.NewServer(stub)
	defer stubSrv.Close()
	fineosProxy, err := faultproxy.NewFineos(stubSrv.URL)
	if err != nil {
		t.Fatal(err)
	}
	fineosSrv := httptest.NewServer(fineosProxy)
	defer fineosSrv.Close()

	sfx := stacktest.Suffix()
	res, err := bootstrap.Ensure(ctx, bootstrap.Clients{SQS: awsconf.SQS(direct), S3: awsconf.S3(direct), Cognito: awsconf.Cognito(direct)},
		bootstrap.Spec{Region: stacktest.Region, QueueName: "chaos-" + sfx, DLQName: "chaos-dlq-" + sfx, MaxReceiveCount: 8,
			VisibilityTimeout: 6 * time.Second, ResultsBucket: "chaos-" + sfx, UserPoolName: "chaos-" + sfx})
	if err != nil {
		t.Fatal(err)
	}
	vars := res.Env()
	vars["DATABASE_URL"] = dbURL
	vars["AWS_ENDPOINT_URL"] = awsSrv.URL
	vars["AWS_REGION"] = stacktest.Region
	vars["AWS_ACCESS_KEY_ID"], vars["AWS_SECRET_ACCESS_KEY"] = "test", "test"
	for k, v := range fineosstub.DefaultOptions().Config(fineosSrv.URL).Env() {
		vars[k] = v
	}
	env := proctest.Env(vars, "LOG_FORMAT=json")

	awsProxy.Set(faultproxy.SQS, faultproxy.Faults{Jitter: 3 * time.Millisecond, Throttle: 0.03, Error: 0.02, ErrorAfter: 0.02, Drop: 0.01, DropAfter: 0.01})
	awsProxy.Set(faultproxy.Cognito, faultproxy.Faults{Jitter: 5 * time.Millisecond, Throttle: 0.05, Error: 0.03, ErrorAfter: 0.03, Drop: 0.01})
	fineosProxy.Set(faultproxy.Fineos, faultproxy.Faults{Latency: 5 * time.Millisecond, Jitter: 15 * time.Millisecond,
		Throttle: 0.03, Error: 0.03, ErrorAfter: 0.03, Drop: 0.01, DropAfter: 0.01})

	csv := filepath.Join(t.TempDir(), "chaos.csv")
	if err := os.WriteFile(csv, []byte(data.csv), 0o600); err != nil {
		t.Fatal(err)
	}

	// Workers, replaced as they are killed or stopped.
	workerArgs := []string{"--concurrency", "8", "--wait-time", "1s", "--visibility-timeout", "6s", "--heartbeat-interval", "2s",
		"--message-timeout", "60s", "--shutdown-timeout", "2s", "--retry-base", "1s", "--retry-max", "3s", "--call-retry-time", "15s",
		"--summary-interval", "5s", "--cognito-get-rate", "0", "--cognito-create-rate", "0", "--cognito-password-rate", "0",
		"--fineos-rate", "15", // about 60 rows/s in all: the import lasts long enough for the chaos
		"--maintain-interval", "500ms", "--leader-lease", "3s"} // the leader is killed too
	var workers, retired []*proctest.Proc
	start := func() {
		p, err := proctest.Start(filepath.Join(binDir, "worker"), env, workerArgs...)
		if err != nil {
			t.Fatal(err)
		}
		workers = append(workers, p)
	}
	defer func() {
		for _, w := range workers {
			w.Kill()
		}
		if t.Failed() {
			for i, w := range append(retired, workers...) {
				t.Logf("--- worker %d (last lines)\n%s", i, tail(w.Output(), 15))
			}
		}
	}()
	for range 4 {
		start()
	}

	// The splitter runs through the faults too; a run that stops is re-run
	// with the same job, as an operator would.
	splitterRuns := 0
	for ; splitterRuns < 5; splitterRuns++ {
		r := proctest.Run(t, filepath.Join(binDir, "splitter"), env, "--job", "chaos", "--force-registration", csv)
		if r.Code == 0 {
			break
		}
		t.Logf("splitter run %d exited %d: %s", splitterRuns+1, r.Code, tail(r.Stderr, 3))
	}
	if splitterRuns == 5 {
		t.Fatal("the splitter failed five times")
	}

	// Chaos until every row is final.
	store := jobs.NewStore(pool)
	var kills, terms, restarts int
	var st jobs.Status
	deadline := time.Now().Add(timeout)
	restartAt := rows / 4
	for {
		if time.Now().After(deadline) {
			t.Fatalf("not done after %s: %+v", timeout, st)
		}
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
		if s, err := store.Status(ctx, "chaos"); err == nil {
			st = s
		}
		if st.Total > 0 && st.Done && st.Results != jobs.ResultsPending {
			break
		}
		switch x := rng.Float64(); {
		case restarts == 0 && st.Total-st.Queued >= int64(restartAt):
			if err := pg.Restart(); err != nil {
				t.Fatalf("restart PostgreSQL: %v", err)
			}
			restarts++
		case x < 0.35:
			i := rng.IntN(len(workers))
			workers[i].Kill()
			kills++
			retired = append(retired, workers[i])
			workers = append(workers[:i], workers[i+1:]...)
			start()
		case x < 0.6:
			i := rng.IntN(len(workers))
			w := workers[i]
			workers = append(workers[:i], workers[i+1:]...)
			if _, stopped, err := w.Stop(20 * time.Second); !stopped || err != nil {
				t.Errorf("worker did not stop cleanly on SIGTERM (stopped %v, %v):\n%s", stopped, err, tail(w.Output(), 10))
			}
			terms++
			retired = append(retired, w)
			start()
		}
	}
	// A worker killed between claiming a row's failure and sending its
	// dead letter left the row's message to finish the send when it is
	// received again (once the claim is 30 s old): the chaos is over, the
	// workers run on until no dead letter is pending.
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		n := pgtest.Count(t, pool, `SELECT count(*) FROM bulk_import_row WHERE job_id = 'chaos' AND dead_letter = 'pending'`)
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d failed rows' dead letters still pending two minutes after the chaos", n)
			break
		}
	}
	for _, w := range workers {
		if _, stopped, err := w.Stop(20 * time.Second); !stopped || err != nil {
			t.Errorf("worker did not stop cleanly on SIGTERM (stopped %v, %v):\n%s", stopped, err, tail(w.Output(), 10))
		}
		retired = append(retired, w)
	}
	workers = nil

	// Every row ended as its data says.
	check := func(what string, got, want int) {
		t.Helper()
		if got != want {
			t.Errorf("%s: %d, want %d", what, got, want)
		}
	}
	if st.Results != jobs.ResultsWritten {
		t.Errorf("the job's result files: %s (%s)", st.Results, st.ResultsError)
	}
	check("rows", int(st.Total), data.rows)
	check("succeeded", int(st.Succeeded), len(data.succeed))
	check("failed", int(st.Failed), len(data.fail))
	check("rejected", int(st.Rejected), data.rejected)
	check("duplicate", int(st.Duplicate), data.duplicate)
	failed := map[int]string{}
	fr, err := pool.Query(ctx, `SELECT row_no, error_code FROM bulk_import_row WHERE job_id = 'chaos' AND state = 'failed'`)
	if err != nil {
		t.Fatal(err)
	}
	for fr.Next() {
		var row int
		var code string
		if err := fr.Scan(&row, &code); err != nil {
			t.Fatal(err)
		}
		failed[row] = code
	}
	for row, code := range failed {
		if data.fail[row] != code {
			t.Errorf("row %d failed with %s; its data says %q", row, code, data.fail[row])
		}
	}

	// PostgreSQL: one user per email, one Employer role each, one link per pair, each registered in FINEOS.
	var users, roles, links, unregistered, pairDups int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM "user"), (SELECT count(*) FROM link_user_role),
		(SELECT count(*) FROM link_user_leave_administrator), (SELECT count(*) FROM link_user_leave_administrator WHERE fineos_web_id IS NULL),
		(SELECT count(*) FROM (SELECT user_id, employer_id FROM link_user_leave_administrator GROUP BY 1, 2 HAVING count(*) > 1) d)`).
		Scan(&users, &roles, &links, &unregistered, &pairDups); err != nil {
		t.Fatal(err)
	}
	check("users", users, len(data.emails))
	check("employer role links", roles, len(data.emails))
	check("leave-admin links", links, len(data.pairs))
	check("links without a FINEOS web id", unregistered, 0)
	check("pairs linked twice", pairDups, 0)
	webIDs := map[string]string{}
	lr, err := pool.Query(ctx, `SELECT u.email_address || '/' || e.employer_fein, l.fineos_web_id, u.sub_id
		FROM link_user_leave_administrator l JOIN "user" u USING (user_id) JOIN employer e USING (employer_id)`)
	if err != nil {
		t.Fatal(err)
	}
	subs := map[string]string{}
	for lr.Next() {
		var pair, web, sub string
		if err := lr.Scan(&pair, &web, &sub); err != nil {
			t.Fatal(err)
		}
		if !data.pairs[pair] {
			t.Errorf("unexpected link %s", pair)
		}
		webIDs[pair] = web
		email, _, _ := strings.Cut(pair, "/")
		subs[email] = sub
	}

	// Cognito: exactly the expected users, confirmed, with the sub the database holds.
	api := awsconf.Cognito(direct)
	for email := range data.emails {
		u, err := api.AdminGetUser(ctx, &cip.AdminGetUserInput{UserPoolId: &res.UserPoolID, Username: aws.String(email)})
		if err != nil || u.UserStatus != "CONFIRMED" {
			t.Errorf("cognito %s: %v", email, err)
			continue
		}
		for _, a := range u.UserAttributes {
			if aws.ToString(a.Name) == "sub" && aws.ToString(a.Value) != subs[email] {
				t.Errorf("cognito %s: sub %s, the database has %s", email, aws.ToString(a.Value), subs[email])
			}
		}
	}
	for email := range data.noUser {
		if _, err := api.AdminGetUser(ctx, &cip.AdminGetUserInput{UserPoolId: &res.UserPoolID, Username: aws.String(email)}); err == nil {
			t.Errorf("cognito user %s created for rows that fail by data", email)
		}
	}

	// FINEOS: one user per pair, under the web id on the link: no second web id for a pair.
	parties := map[string]string{}
	for i := range employers {
		parties[strconv.Itoa(firstFineosID+i)] = strconv.Itoa(firstFEIN + i)
	}
	perPair := map[string][]string{}
	for _, u := range stub.Users() {
		pair := u.Email + "/" + parties[u.PartyReference]
		perPair[pair] = append(perPair[pair], u.UserID)
	}
	check("FINEOS users' pairs", len(perPair), len(data.pairs))
	for pair, ids := range perPair {
		if len(ids) != 1 || ids[0] != webIDs[pair] {
			t.Errorf("FINEOS users of %s: %v, link web id %s", pair, ids, webIDs[pair])
		}
	}

	// At rest (no worker running): the DLQ holds exactly the rows wrong by
	// data, each with one dead letter. SQS may store one send twice (a call
	// retried after SQS applied it): such identical copies are counted
	// apart.
	dlq := queue.New(awsconf.SQS(direct), res.DLQURL)
	dead := map[int]string{}
	letters := map[int]map[string]bool{} // row -> distinct dead letters
	dlqMessages := 0
	for {
		msgs, err := dlq.Receive(ctx, 10, 0, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			break
		}
		for _, m := range msgs {
			dlqMessages++
			row, _ := strconv.Atoi(m.Attributes[message.AttrRow])
			dead[row] = m.Attributes[message.AttrErrorCode]
			if letters[row] == nil {
				letters[row] = map[string]bool{}
			}
			letters[row][m.Attributes[message.AttrErrorCode]+"|"+m.Attributes[message.AttrFailedAt]+"|"+m.Attributes[message.AttrAttempts]] = true
		}
	}
	deadLetter := map[int]string{}
	dr, err := pool.Query(ctx, `SELECT row_no, coalesce(dead_letter, '') FROM bulk_import_row WHERE job_id = 'chaos' AND state = 'failed'`)
	if err != nil {
		t.Fatal(err)
	}
	for dr.Next() {
		var row int
		var state string
		if err := dr.Scan(&row, &state); err != nil {
			t.Fatal(err)
		}
		deadLetter[row] = state
	}
	for row, state := range deadLetter {
		if n := len(letters[row]); state != jobs.DeadLetterSent || n != 1 {
			t.Errorf("failed row %d: dead letter %q, %d distinct dead letters in the DLQ; want sent and 1", row, state, n)
		}
	}
	check("rows in the DLQ", len(dead), len(data.fail))
	for row, code := range dead {
		if data.fail[row] != code {
			t.Errorf("DLQ holds row %d with %s; its data says %q", row, code, data.fail[row])
		}
		if _, failed := deadLetter[row]; !failed {
			t.Errorf("DLQ holds row %d, which is not failed", row)
		}
	}

	// What happened, for the record.
	faults := map[string]int64{}
	for k, v := range awsProxy.Counts() {
		faults[k] = v
	}
	for k, v := range fineosProxy.Counts() {
		faults[k] = v
	}
	keys := make([]string, 0, len(faults))
	for k := range faults {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var fb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&fb, " %s=%d", k, faults[k])
	}
	t.Logf("faults injected:%s", fb.String())
	t.Logf("processes: %d workers killed (SIGKILL), %d stopped (SIGTERM), PostgreSQL restarted %d time(s), splitter runs %d",
		kills, terms, restarts, splitterRuns+1)
	t.Logf("checked: %d rows = %d succeeded + %d failed + %d rejected + %d duplicate; %d users, %d links, %d FINEOS users, %d Cognito users; DLQ %d rows in %d messages (%d identical copies SQS stored twice)",
		st.Total, st.Succeeded, st.Failed, st.Rejected, st.Duplicate, users, links, len(perPair), len(data.emails), len(dead), dlqMessages, dlqMessages-len(dead))
	if restarts != 1 {
		t.Errorf("PostgreSQL was restarted %d times, want 1 (the import ended too soon to restart it)", restarts)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
