package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/shared/budget"
	"github.com/massgov/bulk-user-import/shared/dbpool"
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

func TestStatusSaysWhatHoldsABudgetBack(t *testing.T) {
	t.Parallel()
	st := []budget.State{{Name: budget.CognitoCreate, Budget: 40, Rate: 40, Workers: 1,
		BoundBy: &budget.Bound{Limit: budget.CognitoPassword, By: "cap", Rate: 10, Allowed: 40, Fix: "--cognito-password-budget 40 or more"}}}
	var out bytes.Buffer
	printFleet(&out, fleetState{Budgets: st}, time.Now())
	want := "  cognito_create: held to 10/s by the cognito_password cap of the live workers, below the 40/s its own limits allow " +
		"(each AdminCreateUser needs an AdminSetUserPassword): set --cognito-password-budget 40 or more\n"
	if !strings.Contains(out.String(), want) {
		t.Errorf("status lacks\n%s\nin\n%s", want, out.String())
	}
	b, err := json.Marshal(fleetState{Budgets: st})
	if err != nil {
		t.Fatal(err)
	}
	if want := `"bound_by":{"limit":"cognito_password","by":"cap","rate":10,"allowed":40,"fix":"--cognito-password-budget 40 or more"}`; !strings.Contains(string(b), want) {
		t.Errorf("--json lacks %s:\n%s", want, b)
	}
}

func TestStatusSaysWhatTheWorkersHoldOfTheDatabase(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	// Waiting a little for a connection is the design: not worth a word.
	printConns(&out, &dbState{Workers: 4, Usage: dbpool.Usage{Open: 29, InUse: 3, Max: 32, Acquires: 2000, Waited: 1000, WaitedMS: 2500},
		ServerMax: 100, ServerReserved: 3, ServerOpen: 35})
	if want := "database connections: 4 workers hold 29 (3 in use) of the 32 they may open (--db-max-conns each); the server has 35 open of max_connections 100 (3 reserved)\n"; out.String() != want {
		t.Errorf("got %q\nwant %q", out.String(), want)
	}
	// Waiting long is.
	out.Reset()
	printConns(&out, &dbState{Workers: 4, Unreported: 1, Usage: dbpool.Usage{Open: 29, InUse: 3, Max: 32, Acquires: 2000, Waited: 1800, WaitedMS: 90000},
		ServerMax: 100, ServerReserved: 3, ServerOpen: 35})
	for _, want := range []string{
		"1 more live workers (of an older version) do not say what they hold: not counted above",
		"the rows waited 45 ms per connection ask on average since their workers started (90% of 2000 asks found none free)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "refuses") {
		t.Errorf("warns with room to spare:\n%s", out.String())
	}

	// Twenty workers of 8 on a server of 100, 10 of whose connections are
	// others': the server would refuse them at their peak.
	out.Reset()
	printConns(&out, &dbState{Workers: 20, Usage: dbpool.Usage{Open: 40, Max: 160}, ServerMax: 100, ServerReserved: 3, ServerOpen: 50})
	if want := "the workers may open 160, more than the 87 the server has for them (max_connections 100, 3 reserved, 10 others'): at their peak the server refuses them"; !strings.Contains(out.String(), want) {
		t.Errorf("lacks %q:\n%s", want, out.String())
	}
	if strings.Contains(out.String(), "waited") || strings.Contains(out.String(), "do not say") {
		t.Errorf("says the rows waited when none did, or speaks of unreported workers:\n%s", out.String())
	}

	// No worker said (none runs, or older versions): nothing.
	out.Reset()
	printConns(&out, &dbState{ServerMax: 100})
	if out.Len() != 0 {
		t.Errorf("printed %q without workers", out.String())
	}
}

func TestStatusSaysHowManyWorkersAreIdle(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	printFleet(&out, fleetState{Budgets: []budget.State{
		{Name: budget.CognitoCreate, Budget: 40, Rate: 40, Workers: 4, Idle: 1},
		{Name: budget.CognitoGet, Budget: 60, Rate: 60, Workers: 4, Idle: 4},
		{Name: budget.CognitoPassword, Budget: 40, Rate: 40, Workers: 4},
	}}, time.Now())
	for _, want := range []string{
		"4 workers: 3 active, 13.33 each; 1 idle",
		"4 workers, 15.00 each (all idle)",
		"4 workers, 10.00 each ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
	b, err := json.Marshal(fleetState{Budgets: []budget.State{{Name: budget.CognitoCreate, Workers: 4, Idle: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"workers":4,"idle":1`) {
		t.Errorf("--json lacks the idle workers: %s", b)
	}
}

func TestStatusSaysWhenTheWorkersCapsHoldABudgetBelowItself(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	printFleet(&out, fleetState{Budgets: []budget.State{{Name: budget.CognitoCreate, Budget: 40, Rate: 40, Workers: 4,
		BoundBy: &budget.Bound{Limit: budget.CognitoCreate, By: "cap", Rate: 20, Allowed: 40,
			Fix: "a higher --cognito-create-rate, or none (with --cognito-create-budget, a worker is capped only when it is given)"}}}}, time.Now())
	want := "  cognito_create: held to 20/s by the cognito_create cap of the live workers, below its budget of 40/s: " +
		"set a higher --cognito-create-rate, or none (with --cognito-create-budget, a worker is capped only when it is given)\n"
	if !strings.Contains(out.String(), want) {
		t.Errorf("status lacks\n%s\nin\n%s", want, out.String())
	}
}
