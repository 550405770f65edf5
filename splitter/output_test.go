package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/shared/budget"
)

func TestStatusShowsTheBudgetInForceAndTheWorkersThatDisagree(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	printFleet(&out, fleetState{Budgets: []budget.State{
		{Name: budget.CognitoCreate, Budget: 20, Rate: 20, Workers: 2, WorkerBudgets: []float64{20, 40}},
		{Name: budget.CognitoGet, Budget: 50, Rate: 50, Workers: 2},
	}}, time.Now())
	text := out.String()
	if strings.Contains(text, "cognito_get:") {
		t.Errorf("a note on a budget the workers agree on:\n%s", text)
	}
	for _, want := range []string{
		"cognito_create  budget 20  now 20.0",
		"cognito_create: the live workers' budgets differ (20, 40): the smallest, 20, is in force\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q:\n%s", want, text)
		}
	}
}
