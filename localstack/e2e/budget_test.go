package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/localstack/faultproxy"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/budget"
)

// Two worker processes share a fleet budget of AdminCreateUser calls that
// is above the account's quota (a proxy throttling everything over 4/s):
// the fleet lowers its rate below the budget, every row succeeds, status
// shows the budget, and the summary lines the limits.
func TestTwoWorkersShareABudgetAndAdaptToTheQuota(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	s.AddEmployer(t, "123456789", 1001)
	proxy, envv := cognitoProxy(t, s, "COGNITO_CREATE_BUDGET=10")
	proxy.SetQuota("AdminCreateUser", faultproxy.Quota{Rate: 4})

	// A budget that is not a number stops the worker before anything.
	if r := runBin(t, append(env(s), "COGNITO_CREATE_BUDGET=ten"), "worker"); r.Code != 2 || !strings.Contains(r.Stderr, `COGNITO_CREATE_BUDGET "ten"`) {
		t.Fatalf("a bad budget: exit %d %s", r.Code, r.Stderr)
	}

	args := []string{"--budget-sync", "200ms", "--summary-interval", "1s"}
	w1, w2 := startWorker(t, envv, args...), startWorker(t, envv, args...)
	waitStarted(t, w1)
	waitStarted(t, w2)
	if r := runBin(t, envv, "splitter", "--job", "budget", writeRows(t, "b.csv", generatedRows("budget", 40)...)); r.Code != 0 {
		t.Fatalf("splitter: %d %s", r.Code, r.Stderr)
	}

	// While it runs: both workers share the budget, and the fleet's rate
	// went below it when the quota throttled.
	var seen budget.State
	for deadline := time.Now().Add(40 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var st struct {
			Budgets []budget.State `json:"budgets"`
		}
		r := runBin(t, envv, "splitter", "status", "budget", "--json")
		if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil {
			t.Fatalf("status: %v %s %s", err, r.Stdout, r.Stderr)
		}
		for _, b := range st.Budgets {
			if b.Name == budget.CognitoCreate && b.Workers == 2 && b.Budget == 10 && b.Rate < 10 && b.Throttled > 0 {
				seen = b
			}
		}
		if seen.Name != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed two workers sharing a lowered budget: %v", st.Budgets)
		}
	}
	text := statusText(t, envv, "budget")
	if !strings.Contains(text, "fleet budgets") || !strings.Contains(text, "cognito_create") || !strings.Contains(text, "lowered after throttling") {
		t.Errorf("status text lacks the budget:\n%s", text)
	}

	st := waitDone(t, envv, "budget")
	if st["succeeded"] != 40.0 || st["failed"] != 0.0 {
		t.Fatalf("after the run: %v", st)
	}
	c := proxy.Counts()
	if c["cognito.quota.AdminCreateUser.accepted"] < 40 || c["cognito.quota.AdminCreateUser.throttled"] == 0 {
		t.Fatalf("the quota was not in play: %v", c)
	}
	for _, w := range []string{w1.Output(), w2.Output()} {
		if !strings.Contains(w, `"limits":{`) || !strings.Contains(w, `"cognito_create":{"budget":10`) {
			t.Errorf("no summary line with the limits:\n%s", w)
		}
		checkStrictJSON(t, w)
	}
	t.Logf("fleet view during the run: %+v; proxy: %d accepted, %d throttled", seen,
		c["cognito.quota.AdminCreateUser.accepted"], c["cognito.quota.AdminCreateUser.throttled"])
}
