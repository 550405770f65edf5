package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cip "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider"
	cognitotypes "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/register"
)

// The plan's world: every email and FEIN distinctive (the outputs are
// searched for them).
const (
	planFEINKnown    = "316274051" // FINEOS party 5101
	planFEINSecond   = "726104832" // FINEOS party 5102
	planFEINNoFineos = "446622913" // no FINEOS id
	planFEINMissing  = "538291746" // no such employer

	planLinked     = "harriet.linked@plan-probe.example"      // Cognito, PFML user and link to the known employer
	planRegistered = "ignatius.registered@plan-probe.example" // the same, registered in FINEOS
	planCognitoOne = "jocasta.cognitoonly@plan-probe.example" // a Cognito user only
	planNew        = "kendrick.brandnew@plan-probe.example"   // nothing anywhere
	planNobody     = "lucretia.noemployer@plan-probe.example" // unknown FEIN
	planNobody2    = "mortimer.noemployer@plan-probe.example" // unknown FEIN
	planWidget     = "nerissa.nofineos@plan-probe.example"    // employer without a FINEOS id
	planConflict   = "octavian.conflict@plan-probe.example"   // a PFML user row without a sub holds it
)

// planCSV: line 2 an existing link; 3 a second employer of that person;
// 4 a Cognito-only user; 5 a new person; 6 and 7 the unknown FEIN; 8 the
// employer without a FINEOS id; 9 the conflict; 10 a rejected row; 11 a
// duplicate of 5; 12 a link registered in FINEOS already.
var planCSV = "fein,email\n" +
	"31-6274051," + planLinked + "\n" +
	planFEINSecond + "," + strings.ToUpper(planLinked) + "\n" +
	planFEINKnown + "," + planCognitoOne + "\n" +
	planFEINKnown + "," + planNew + "\n" +
	planFEINMissing + "," + planNobody + "\n" +
	planFEINMissing + "," + planNobody2 + "\n" +
	planFEINNoFineos + "," + planWidget + "\n" +
	planFEINKnown + "," + planConflict + "\n" +
	planFEINKnown + ",not-an-email\n" +
	planFEINKnown + "," + strings.ToUpper(planNew) + "\n" +
	planFEINKnown + "," + planRegistered + "\n"

func planSecrets() []string {
	var out []string
	for _, e := range []string{planLinked, planRegistered, planCognitoOne, planNew, planNobody, planNobody2, planWidget, planConflict} {
		local, _, _ := strings.Cut(e, "@")
		out = append(out, local)
	}
	for _, f := range []string{planFEINKnown, planFEINSecond, planFEINNoFineos, planFEINMissing} {
		out = append(out, f, f[:2]+"-"+f[2:])
	}
	return out
}

func planLeaks(out string) []string {
	lower := strings.ToLower(out)
	var found []string
	for _, s := range planSecrets() {
		if strings.Contains(lower, strings.ToLower(s)) {
			found = append(found, s)
		}
	}
	return found
}

// planWorld seeds the stack: employers, users registered before (as an
// import would have), a Cognito-only user and a conflicting user row; it
// returns the CSV's path.
func planWorld(t *testing.T, s *stacktest.Stack) string {
	t.Helper()
	ctx := context.Background()
	s.AddEmployer(t, planFEINKnown, 5101)
	s.AddEmployer(t, planFEINSecond, 5102)
	s.AddEmployer(t, planFEINNoFineos, 0)
	reg := s.Registrar(t)
	for _, req := range []register.Request{
		{Email: planLinked, FEIN: planFEINKnown},
		{Email: planRegistered, FEIN: planFEINKnown, ForceRegistration: true},
	} {
		if _, err := reg.Register(ctx, logging.Discard(), req); err != nil {
			t.Fatalf("seed %v: %v", req, err)
		}
	}
	// Created by someone else, its password never set: FORCE_CHANGE_PASSWORD.
	if _, err := awsconf.Cognito(s.AWS).AdminCreateUser(ctx, &cip.AdminCreateUserInput{UserPoolId: &s.Resources.UserPoolID,
		Username: aws.String(planCognitoOne), MessageAction: cognitotypes.MessageActionTypeSuppress}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool.Exec(ctx, `INSERT INTO "user" (user_id, email_address) VALUES (gen_random_uuid(), $1)`, planConflict); err != nil {
		t.Fatal(err)
	}
	csv := filepath.Join(t.TempDir(), "plan.csv")
	if err := os.WriteFile(csv, []byte(planCSV), 0o600); err != nil {
		t.Fatal(err)
	}
	return csv
}

// planJSON runs splitter plan --json and decodes its object.
func planJSON(t *testing.T, envv []string, wantCode int, args ...string) map[string]any {
	t.Helper()
	r := runBin(t, envv, "splitter", append([]string{"plan", "--json"}, args...)...)
	if r.Code != wantCode {
		t.Fatalf("plan: exit %d, want %d\n%s\n%s", r.Code, wantCode, r.Stdout, r.Stderr)
	}
	if l := planLeaks(r.Stdout + r.Stderr); len(l) > 0 {
		t.Errorf("plan --json leaks %v:\n%s\n%s", l, r.Stdout, r.Stderr)
	}
	var out map[string]any
	if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil {
		t.Fatalf("plan --json: %v\n%s", err, r.Stdout)
	}
	return out
}

func checkKeys(t *testing.T, what string, got map[string]any, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s = %v, want %v", what, k, got[k], v)
		}
	}
}

// TestPlanReportsEachCategory runs splitter plan on a world with each
// category, with and without force registration, checks the counts, the
// lines, the masked FEINs and that nothing personal is printed, then runs
// the import and checks that its outcome is the plan's.
func TestPlanReportsEachCategory(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	csv := planWorld(t, s)
	envv := env(s)

	plain := planJSON(t, envv, 3, csv)
	checkKeys(t, "plan", plain, map[string]float64{
		"rows": 11, "rejected": 1, "duplicates": 1, "accepted": 9,
		"would_succeed": 6, "would_fail": 3,
		"emails": 8, "cognito_existing": 3, "cognito_new": 2, "cognito_not_reached": 2, "email_conflicts": 1,
		"pfml_users_existing": 2, "pfml_users_new": 3,
		"links_existing": 2, "links_new": 4,
		"employers_not_found": 1, "employers_without_fineos_id": 1,
	})

	forced := planJSON(t, envv, 3, "--force-registration", csv)
	checkKeys(t, "plan --force-registration", forced, map[string]float64{
		"rows": 11, "rejected": 1, "duplicates": 1,
		"would_succeed": 5, "would_fail": 4,
		"cognito_existing": 3, "cognito_new": 1, "cognito_not_reached": 3, "email_conflicts": 1,
		"pfml_users_existing": 2, "pfml_users_new": 2,
		"links_existing": 2, "links_new": 3, "fineos_registered": 1,
		"employers_not_found": 1, "employers_without_fineos_id": 1,
		// 5 AdminGetUser (a row each), 1 AdminCreateUser, 2 AdminSetUserPassword
		// (the new user's, and the one left in FORCE_CHANGE_PASSWORD).
		"cognito_calls": 8,
	})
	if calls := forced["calls"].(map[string]any); calls["fineos"] != 4.0 || calls["cognito_get"] != 5.0 {
		t.Errorf("calls: %v", calls)
	}
	for _, k := range []string{"rows", "rejected", "duplicates", "cognito_existing", "cognito_new", "links_existing", "links_new",
		"employers_not_found", "employers_without_fineos_id", "estimated_seconds"} {
		if v, ok := forced[k].(float64); !ok || v != float64(int64(v)) {
			t.Errorf("key %s = %v: want an integer", k, forced[k])
		}
	}
	failures := map[string]string{}
	for _, f := range forced["failures_by_code"].([]any) {
		f := f.(map[string]any)
		failures[f["code"].(string)] = fmt.Sprint(f["rows"], f["lines"])
	}
	want := map[string]string{
		"EMPLOYER_NOT_FOUND":      "2 [" + csv + ":6 " + csv + ":7]",
		"FINEOS_EMPLOYER_MISSING": "1 [" + csv + ":8]",
		"EMAIL_CONFLICT":          "1 [" + csv + ":9]",
	}
	if fmt.Sprint(failures) != fmt.Sprint(want) {
		t.Errorf("failures by code:\n got %v\nwant %v", failures, want)
	}
	emps := forced["employers"].([]any)
	if len(emps) != 2 {
		t.Fatalf("employers: %v", emps)
	}
	missing := emps[0].(map[string]any)
	if missing["fein"] != "*****1746" || missing["problem"] != "not_found" || missing["rows"] != 2.0 || missing["rows_fail"] != true {
		t.Errorf("missing employer: %v", missing)
	}
	if nf := emps[1].(map[string]any); nf["fein"] != "*****2913" || nf["problem"] != "without_fineos_id" || nf["rows_fail"] != true {
		t.Errorf("employer without a FINEOS id: %v", nf)
	}
	rejected := forced["rejected_by_reason"].([]any)
	if len(rejected) != 1 || fmt.Sprint(rejected[0]) != fmt.Sprint(map[string]any{"code": "INVALID_EMAIL", "rows": 1.0, "lines": []any{csv + ":10"}}) {
		t.Errorf("rejected: %v", rejected)
	}

	// The text says the same, masked.
	r := runBin(t, envv, "splitter", "plan", csv, "--force-registration")
	if r.Code != 3 {
		t.Fatalf("plan: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, w := range []string{"11 total, 1 rejected, 1 duplicate", "5 rows would succeed, 4 would fail",
		"would fail EMPLOYER_NOT_FOUND: 2 rows (" + csv + ":6, " + csv + ":7)",
		"3 have a Cognito user, 1 would be created", "PFML users: 2 exist, 2 would be created",
		"2 exist (nothing to do), 3 would be created; FINEOS: 1 registered already, 4 to register",
		"*****1746 not found: 2 rows", "*****2913 without fineos id: 1 row",
		"8 Cognito (5 AdminGetUser, 1 AdminCreateUser, 2 AdminSetUserPassword), 4 FINEOS"} {
		if !strings.Contains(r.Stdout, w) {
			t.Errorf("plan text lacks %q:\n%s", w, r.Stdout)
		}
	}
	if l := planLeaks(r.Stdout + r.Stderr); len(l) > 0 {
		t.Errorf("plan text leaks %v:\n%s\n%s", l, r.Stdout, r.Stderr)
	}

	// The import does what the plan said.
	before := planCounts(t, s)
	startWorker(t, envv)
	r = runBin(t, envv, "splitter", csv, "--force-registration", "--wait", "--poll-interval", "200ms", "--job", "plan-then-import")
	if r.Code != 3 {
		t.Fatalf("import: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	r = runBin(t, envv, "splitter", "status", "plan-then-import", "--json")
	var st map[string]any
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil {
		t.Fatal(err)
	}
	checkKeys(t, "import status", st, map[string]float64{"total": forced["rows"].(float64), "succeeded": forced["would_succeed"].(float64),
		"failed": forced["would_fail"].(float64), "rejected": forced["rejected"].(float64), "duplicate": forced["duplicates"].(float64)})
	byCode := st["failures_by_code"].(map[string]any)
	for _, f := range forced["failures_by_code"].([]any) {
		f := f.(map[string]any)
		if byCode[f["code"].(string)] != f["rows"] {
			t.Errorf("import failures %v, plan %v", byCode, forced["failures_by_code"])
		}
	}
	after := planCounts(t, s)
	for k, key := range map[string]string{"cognito": "cognito_new", "users": "pfml_users_new", "links": "links_new"} {
		if got := after[k] - before[k]; float64(got) != forced[key].(float64) {
			t.Errorf("the import created %d %s, the plan said %s = %v", got, k, key, forced[key])
		}
	}
	if got := after["fineos"] - before["fineos"]; float64(got) != forced["calls"].(map[string]any)["fineos"].(float64) {
		t.Errorf("the import registered %d FINEOS users, the plan said %v", got, forced["calls"])
	}
}

// planCounts counts what an import creates: Cognito users, PFML users,
// links and FINEOS users.
func planCounts(t *testing.T, s *stacktest.Stack) map[string]int {
	t.Helper()
	ctx := context.Background()
	var users, links int
	if err := s.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM "user"), (SELECT count(*) FROM link_user_leave_administrator)`).
		Scan(&users, &links); err != nil {
		t.Fatal(err)
	}
	return map[string]int{"cognito": len(cognitoUsers(t, s)), "fineos": len(s.Fineos.Users()), "users": users, "links": links}
}

// cognitoUsers lists the pool's users: "username status", sorted.
func cognitoUsers(t *testing.T, s *stacktest.Stack) []string {
	t.Helper()
	api := awsconf.Cognito(s.AWS)
	var out []string
	p := cip.NewListUsersPaginator(api, &cip.ListUsersInput{UserPoolId: &s.Resources.UserPoolID})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range page.Users {
			out = append(out, aws.ToString(u.Username)+" "+string(u.UserStatus))
		}
	}
	slices.Sort(out)
	return out
}

// TestPlanWritesNothing compares Cognito's users, every table of the
// database (row counts and checksums), the queues and FINEOS before and
// after plans (text and JSON, with and without force registration).
func TestPlanWritesNothing(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	csv := planWorld(t, s)
	envv := env(s)
	snap := func() string {
		var b strings.Builder
		fmt.Fprintf(&b, "cognito: %v\n", cognitoUsers(t, s))
		fmt.Fprintf(&b, "fineos: %d users, %d calls\n", len(s.Fineos.Users()), len(s.Fineos.Calls()))
		ctx := context.Background()
		rows, err := s.Pool.Query(ctx, `SELECT table_name FROM information_schema.tables
			WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		var tables []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			tables = append(tables, n)
		}
		if len(tables) < 8 {
			t.Fatalf("tables: %v", tables)
		}
		for _, tb := range tables {
			var n int
			var sum string
			if err := s.Pool.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM %q t`, tb)).
				Scan(&n, &sum); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "table %s: %d rows, %s\n", tb, n, sum)
		}
		sq := awsconf.SQS(s.AWS)
		for _, q := range []string{s.Resources.QueueURL, s.Resources.DLQURL} {
			a, err := sq.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: &q, AttributeNames: []sqstypes.QueueAttributeName{
				sqstypes.QueueAttributeNameApproximateNumberOfMessages, sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "queue %s: %v %v\n", q, a.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessages)],
				a.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible)])
		}
		return b.String()
	}
	before := snap()
	for _, args := range [][]string{{"plan", csv}, {"plan", "--json", csv}, {"plan", "--force-registration", csv}, {"plan", "--json", "--force-registration", csv}} {
		if r := runBin(t, envv, "splitter", args...); r.Code != 3 {
			t.Fatalf("%v: exit %d\n%s\n%s", args, r.Code, r.Stdout, r.Stderr)
		}
	}
	if after := snap(); after != before {
		t.Fatalf("the plan changed something:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// The queues are empty for real: nothing to receive.
	msgs, err := awsconf.SQS(s.AWS).ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: &s.Resources.QueueURL, MaxNumberOfMessages: 10})
	if err != nil || len(msgs.Messages) != 0 {
		t.Fatalf("the queue holds %v (%v)", msgs, err)
	}
}

// TestPlanEstimatesUnderTheFleetsBudgets seeds a fleet of two live
// workers with a live cognito_create budget in the database: the estimate
// uses it (and a worker's default rate per live worker for the others),
// a flag or the worker's variable overrides it, and the plan's lookups
// are paced (--lookup-rate).
func TestPlanEstimatesUnderTheFleetsBudgets(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	csv := planWorld(t, s)
	if _, err := s.Pool.Exec(context.Background(), `
		INSERT INTO bulk_import_worker (worker_id) VALUES ('w1'), ('w2');
		INSERT INTO bulk_import_budget (name, budget, rate) VALUES ('cognito_create', 0.5, 0.5);
		INSERT INTO bulk_import_budget_share (name, worker_id, budget) VALUES ('cognito_create', 'w1', 0.5), ('cognito_create', 'w2', 0.5)`); err != nil {
		t.Fatal(err)
	}
	envv := env(s)
	budgets := func(p map[string]any) map[string]string {
		out := map[string]string{}
		for _, b := range p["budgets"].([]any) {
			b := b.(map[string]any)
			out[b["name"].(string)] = fmt.Sprintf("%v calls at %v/s (%v)", b["calls"], b["rate"], b["source"])
		}
		return out
	}

	p := planJSON(t, envv, 3, "--force-registration", csv)
	// 1 AdminCreateUser at 0.5/s: 2 s; 4 FINEOS calls at 2 × 10/s.
	if p["binding_budget"] != "cognito_create" || p["estimated_seconds"] != 2.0 {
		t.Errorf("estimate: %v s, %v binds; budgets %v", p["estimated_seconds"], p["binding_budget"], budgets(p))
	}
	b := budgets(p)
	if b["cognito_create"] != "1 calls at 0.5/s (the fleet's live budget (2 workers))" ||
		b["fineos"] != "4 calls at 20/s (no budget: a worker's default 10/s × 2 workers)" ||
		b["cognito_get"] != "5 calls at 40/s (no budget: a worker's default 20/s × 2 workers)" {
		t.Errorf("budgets: %v", b)
	}

	p = planJSON(t, envv, 3, "--force-registration", "--fineos-budget", "0.25", csv)
	if p["binding_budget"] != "fineos" || p["estimated_seconds"] != 16.0 {
		t.Errorf("with --fineos-budget 0.25: %v s, %v binds; %v", p["estimated_seconds"], p["binding_budget"], budgets(p))
	}
	p = planJSON(t, append(env(s), "FINEOS_BUDGET=1"), 3, "--force-registration", csv)
	if p["binding_budget"] != "fineos" || p["estimated_seconds"] != 4.0 || !strings.Contains(budgets(p)["fineos"], "env FINEOS_BUDGET") {
		t.Errorf("with FINEOS_BUDGET=1: %v s, %v binds; %v", p["estimated_seconds"], p["binding_budget"], budgets(p))
	}

	// The lookups take their tokens: 4 lookups at 2/s take 1.5 s at least.
	start := time.Now()
	p = planJSON(t, envv, 3, "--force-registration", "--lookup-rate", "2", csv)
	if took := time.Since(start); took < 1400*time.Millisecond || p["cognito_lookups"] != 4.0 {
		t.Errorf("4 lookups at 2/s took %s (%v lookups)", took, p["cognito_lookups"])
	}
	// Without the flag, a plan takes one more worker's share: 40/s / 3.
	r := runBin(t, envv, "splitter", "plan", csv)
	if !strings.Contains(r.Stdout, "this plan sent 5 AdminGetUser lookups, at most 13.3/s") {
		t.Errorf("lookup rate:\n%s", r.Stdout)
	}
}

// TestPlanExitCodes: 0 when no row would fail, 3 when some would, 1 for a
// refused source or an unreachable database, 2 on usage errors.
func TestPlanExitCodes(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	s.AddEmployer(t, planFEINKnown, 5101)
	envv := env(s)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.csv")
	if err := os.WriteFile(good, []byte("fein,email\n"+planFEINKnown+","+planNew+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := planJSON(t, envv, 0, good, "--force-registration")
	checkKeys(t, "clean plan", p, map[string]float64{"rows": 1, "would_succeed": 1, "would_fail": 0, "cognito_new": 1, "links_new": 1})

	for _, c := range []struct {
		name string
		envv []string
		args []string
		code int
		says string
	}{
		{"no source", envv, nil, 2, "no SOURCE"},
		{"bad flag", envv, []string{"--max-lines", "x", good}, 2, "invalid value"},
		{"negative rate", envv, []string{"--lookup-rate", "-1", good}, 2, "0 or more"},
		{"no pool", append(env(s), "COGNITO_USER_POOL_ID=", "COGNITO_IDENTITY_POOL_ID="), []string{good}, 2, "COGNITO_USER_POOL_ID"},
		{"missing file", envv, []string{filepath.Join(dir, "nope.csv")}, 1, "REFUSED"},
		{"no database", append(env(s), "DATABASE_URL=postgres://postgres@127.0.0.1:1/none?connect_timeout=2"), []string{good}, 1, "splitter:"},
		{"no such pool", append(env(s), "COGNITO_USER_POOL_ID=us-east-1_NoSuchPool"), []string{good}, 1, "look up the Cognito user of k***@***.example"},
	} {
		r := runBin(t, c.envv, "splitter", append([]string{"plan"}, c.args...)...)
		if r.Code != c.code || !strings.Contains(r.Stdout+r.Stderr, c.says) {
			t.Errorf("%s: exit %d, want %d saying %q\n%s\n%s", c.name, r.Code, c.code, c.says, r.Stdout, r.Stderr)
		}
		if l := planLeaks(r.Stdout + r.Stderr); len(l) > 0 {
			t.Errorf("%s: leaks %v:\n%s\n%s", c.name, l, r.Stdout, r.Stderr)
		}
	}
}
