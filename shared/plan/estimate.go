package plan

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/shared/budget"
	"github.com/massgov/bulk-user-import/shared/fleet"
)

// Names are the budgets an import spends, in the order they are shown.
var Names = []string{budget.CognitoGet, budget.CognitoCreate, budget.CognitoPassword, budget.Fineos}

// DefaultRates are a worker's default per-worker rates (its --*-rate
// flags): the fleet's rate when no budget is set is one per live worker.
var DefaultRates = map[string]float64{budget.CognitoGet: 20, budget.CognitoCreate: 10, budget.CognitoPassword: 10, budget.Fineos: 10}

// EnvVar is the worker's variable of a budget (COGNITO_GET_BUDGET).
func EnvVar(name string) string { return strings.ToUpper(name) + "_BUDGET" }

// Rate is the fleet's rate of a kind of request, in requests per second,
// and where it was found.
type Rate struct {
	PerSecond float64
	Source    string
}

// Fleet is the rates an import would run under and the live workers.
type Fleet struct {
	Rates   map[string]Rate
	Workers int
}

// liveBudgets is how recently a budget must have been synced to be live
// (as status reads them).
const liveBudgets = 10 * time.Second

// ReadFleet finds the fleet's rate of each budget: given (a flag, > 0),
// else the live budget in the database, else the worker's variable in
// env, else a worker's default rate times the live workers (at least
// one). It only reads; a database without the import's tables has no
// budgets and no workers.
func ReadFleet(ctx context.Context, pool *pgxpool.Pool, given map[string]float64, env map[string]string) (Fleet, error) {
	f := Fleet{Rates: map[string]Rate{}}
	live := map[string]budget.State{}
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('bulk_import_budget_share') IS NOT NULL AND to_regclass('bulk_import_worker') IS NOT NULL`).Scan(&exists); err != nil {
		return f, fmt.Errorf("read the fleet's budgets: %w", err)
	}
	if exists {
		states, err := budget.Read(ctx, pool, liveBudgets)
		if err != nil {
			return f, err
		}
		for _, st := range states {
			live[st.Name] = st
		}
		workers, err := fleet.Live(ctx, pool)
		if err != nil {
			return f, err
		}
		f.Workers = len(workers)
	}
	for _, name := range Names {
		var r Rate
		st, isLive := live[name]
		v, envErr := strconv.ParseFloat(strings.TrimSpace(env[EnvVar(name)]), 64)
		switch {
		case given[name] > 0:
			r = Rate{given[name], "flag --" + budget.BudgetFlag(name)}
		case isLive && st.Budget > 0:
			r = Rate{st.Budget, fmt.Sprintf("the fleet's live budget (%d workers)", st.Workers)}
		case envErr == nil && v > 0:
			r = Rate{v, "env " + EnvVar(name)}
		default:
			n := max(f.Workers, 1)
			r = Rate{DefaultRates[name] * float64(n), fmt.Sprintf("no budget: a worker's default %g/s × %d workers", DefaultRates[name], n)}
		}
		f.Rates[name] = r
	}
	return f, nil
}

// LookupRate is the AdminGetUser rate a plan takes of the fleet's read
// budget: one more worker's share.
func (f Fleet) LookupRate() float64 {
	return f.Rates[budget.CognitoGet].PerSecond / float64(f.Workers+1)
}

// Budget is one budget's part of the estimate.
type Budget struct {
	Name    string  `json:"name"`
	Calls   int64   `json:"calls"`
	Rate    float64 `json:"rate"` // requests per second for the fleet
	Source  string  `json:"source"`
	Seconds float64 `json:"seconds"`
}

// Estimate is how long an import would take under the fleet's budgets:
// the time of the budget that binds (the one its calls take longest to
// spend). It is a lower bound: the workers' own throughput, retries and
// FINEOS's latency come on top.
type Estimate struct {
	EstimatedSeconds int64    `json:"estimated_seconds"`
	Binding          string   `json:"binding_budget"` // "" when no call is needed
	Budgets          []Budget `json:"budgets"`
}

// EstimateUnder fills the report's estimate under the fleet's rates.
func (r *Report) EstimateUnder(f Fleet) {
	calls := map[string]int64{
		budget.CognitoGet: r.Calls.CognitoGet, budget.CognitoCreate: r.Calls.CognitoCreate,
		budget.CognitoPassword: r.Calls.CognitoPassword, budget.Fineos: r.Calls.Fineos,
	}
	r.Estimate = Estimate{Budgets: nil}
	longest := 0.0
	for _, name := range Names {
		rate := f.Rates[name]
		b := Budget{Name: name, Calls: calls[name], Rate: rate.PerSecond, Source: rate.Source}
		if rate.PerSecond > 0 {
			b.Seconds = float64(b.Calls) / rate.PerSecond
		}
		if b.Seconds > longest {
			longest, r.Binding = b.Seconds, name
		}
		r.Budgets = append(r.Budgets, b)
	}
	r.EstimatedSeconds = int64(math.Ceil(longest))
}
