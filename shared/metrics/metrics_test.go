package metrics

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/shared/budget"
)

func TestPrometheusText(t *testing.T) {
	t.Parallel()
	var m Worker
	m.Received.Add(3)
	m.Succeeded.Add(2)
	m.InFlight.Add(1)
	m.Error("EMPLOYER_NOT_FOUND")
	m.Step("cognito", 1500*time.Millisecond, nil)
	m.Step("cognito", 500*time.Millisecond, errors.New("x"))
	m.Leader.Store(1)
	m.RowsResent.Add(4)
	m.ResultsFailed.Add(1)
	m.Breaker("fineos", true)
	m.Breaker("cognito", false)
	m.Paused.Add(2)
	m.Budgets = func() []budget.State {
		return []budget.State{{Name: budget.CognitoCreate, Budget: 40, Rate: 28.5, Workers: 4, Idle: 1, Share: 7.125, Calls: 100, Throttled: 3}}
	}
	m.BudgetSyncs = func() int64 { return 12 }
	rec := httptest.NewRecorder()
	m.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		"bulk_import_messages_received_total 3\n",
		`bulk_import_rows_total{outcome="succeeded"} 2` + "\n",
		"bulk_import_in_flight 1\n",
		`bulk_import_errors_total{code="EMPLOYER_NOT_FOUND"} 1` + "\n",
		`bulk_import_step_duration_seconds_sum{step="cognito"} 2` + "\n",
		`bulk_import_step_duration_seconds_count{step="cognito"} 2` + "\n",
		`bulk_import_step_errors_total{step="cognito"} 1` + "\n",
		"# TYPE bulk_import_in_flight gauge\n",
		"bulk_import_maintainer_leader 1\n",
		"bulk_import_rows_resent_total 4\n",
		`bulk_import_result_files_total{outcome="failed"} 1` + "\n",
		`bulk_import_result_files_total{outcome="written"} 0` + "\n",
		`bulk_import_breaker_open{dependency="fineos"} 1` + "\n",
		`bulk_import_breaker_open{dependency="cognito"} 0` + "\n",
		`bulk_import_rows_total{outcome="paused"} 2` + "\n",
		`bulk_import_budget_requests_per_second{budget="cognito_create"} 40` + "\n",
		`bulk_import_budget_fleet_rate{budget="cognito_create"} 28.5` + "\n",
		`bulk_import_budget_share{budget="cognito_create"} 7.125` + "\n",
		`bulk_import_budget_workers{budget="cognito_create"} 4` + "\n",
		`bulk_import_budget_idle_workers{budget="cognito_create"} 1` + "\n",
		`bulk_import_budget_throttled_total{budget="cognito_create"} 3` + "\n",
		"bulk_import_budget_syncs_total 12\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %q in:\n%s", want, body)
		}
	}
}

func TestEMFLinesCarryDeltas(t *testing.T) {
	t.Parallel()
	var m Worker
	m.Succeeded.Add(5)
	m.Error("FINEOS_UNAVAILABLE")
	prev := m.Snapshot(time.Now())
	m.Succeeded.Add(3)
	m.Error("FINEOS_UNAVAILABLE")
	m.Error("FINEOS_UNAVAILABLE")
	var buf bytes.Buffer
	if err := WriteEMF(&buf, "worker", prev, m.Snapshot(time.Now())); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines:\n%s", len(lines), buf.String())
	}
	var rows, errs map[string]any
	if json.Unmarshal([]byte(lines[0]), &rows) != nil || json.Unmarshal([]byte(lines[1]), &errs) != nil {
		t.Fatalf("not JSON:\n%s", buf.String())
	}
	if rows["RowsSucceeded"] != 3.0 || rows["Service"] != "worker" || rows["_aws"] == nil {
		t.Fatalf("rows record %v", rows)
	}
	if errs["Errors"] != 2.0 || errs["ErrorCode"] != "FINEOS_UNAVAILABLE" {
		t.Fatalf("errors record %v", errs)
	}
	aws := rows["_aws"].(map[string]any)["CloudWatchMetrics"].([]any)[0].(map[string]any)
	if aws["Namespace"] != Namespace {
		t.Fatalf("namespace %v", aws["Namespace"])
	}
}
