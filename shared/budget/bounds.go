package budget

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Flags are one worker's limit of one kind of request, in requests per
// second (0: none): the fleet's budget it was given and its own cap.
type Flags struct {
	Budget float64 `json:"budget,omitempty"`
	Cap    float64 `json:"cap,omitempty"`
}

// Needs lists, for a kind of request, the others each one needs: a user is
// created (AdminCreateUser) after it was looked up (AdminGetUser) and
// before its password is set (AdminSetUserPassword).
var Needs = map[string][]string{CognitoCreate: {CognitoGet, CognitoPassword}}

// calls names the request of each limit.
var calls = map[string]string{
	CognitoGet: "AdminGetUser", CognitoCreate: "AdminCreateUser", CognitoPassword: "AdminSetUserPassword", Fineos: "FINEOS call",
}

// BudgetFlag and RateFlag are the worker's flags of a limit: its fleet
// budget (cognito-create-budget) and its per-worker cap
// (cognito-create-rate).
func BudgetFlag(name string) string { return strings.ReplaceAll(name, "_", "-") + "-budget" }
func RateFlag(name string) string   { return strings.ReplaceAll(name, "_", "-") + "-rate" }

// A Bound says that the limit of a kind of request that another needs
// holds that other below what its own budget and caps allow; or that the
// per-worker caps of a kind hold it below its own budget (Limit is then
// the held kind itself).
type Bound struct {
	Limit   string  `json:"limit"`   // the limit that binds: cognito_password
	By      string  `json:"by"`      // what of it binds: "budget" (the fleet's) or "cap" (the workers' caps, added up)
	Rate    float64 `json:"rate"`    // requests per second the held kind is held to, for the fleet
	Allowed float64 `json:"allowed"` // requests per second its own budget and caps allow, for the fleet (its own caps: its budget)
	Fix     string  `json:"fix"`     // the flag to set
}

// Text says it: "held to 10/s by the cognito_password cap of this
// worker, ...", of the held limit and the workers concerned ("this
// worker", "the live workers").
func (b Bound) Text(held, workers string) string {
	if b.Limit == held {
		return fmt.Sprintf("held to %g/s by the %s cap of %s, below its budget of %g/s: set %s",
			round2(b.Rate), b.Limit, workers, round2(b.Allowed), b.Fix)
	}
	by := fmt.Sprintf("the %s budget", b.Limit)
	if b.By == "cap" {
		by = fmt.Sprintf("the %s cap of %s", b.Limit, workers)
	}
	return fmt.Sprintf("held to %g/s by %s, below the %g/s its own limits allow (each %s needs an %s): set %s",
		round2(b.Rate), by, round2(b.Allowed), calls[held], calls[b.Limit], b.Fix)
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

// Bounds returns the limits of the requests that each request of name
// needs (Needs) which hold it below what its own limits allow, and its own
// per-worker caps when they hold it below its budget, lowest first, for a
// fleet of workers with these flags (each worker's by name; a name
// missing: no limit). What a fleet may send of a kind is the smallest
// budget among the workers that have one, within the sum of their caps,
// plus the caps of those without a budget.
func Bounds(name string, workers []map[string]Flags) []Bound {
	allowed, byBudget, ceiling := capacity(name, workers)
	if math.IsInf(allowed, 1) {
		return nil // no limit to hold below
	}
	var out []Bound
	if !byBudget && allowed < ceiling {
		// A budget held below itself by the caps given beside it.
		out = append(out, Bound{Limit: name, By: "cap", Rate: allowed, Allowed: ceiling,
			Fix: fmt.Sprintf("a higher --%s, or none (with --%s, a worker is capped only when it is given)", RateFlag(name), BudgetFlag(name))})
	}
	for _, need := range Needs[name] {
		rate, byBudget, _ := capacity(need, workers)
		if rate >= allowed {
			continue
		}
		b := Bound{Limit: need, By: "cap", Rate: rate, Allowed: allowed}
		switch {
		case byBudget:
			b.By, b.Fix = "budget", fmt.Sprintf("--%s %g or more", BudgetFlag(need), round2(allowed))
		case budgeted(need, workers):
			// Caps given explicitly beside the budget.
			b.Fix = fmt.Sprintf("a higher --%s, or none (with --%s, a worker is capped only when it is given)", RateFlag(need), BudgetFlag(need))
		case budgeted(name, workers):
			b.Fix = fmt.Sprintf("--%s %g or more", BudgetFlag(need), round2(allowed))
		default:
			// Per-worker caps alone: each worker's below its cap of name.
			most := 0.0
			for _, w := range workers {
				most = max(most, w[name].Cap)
			}
			b.Fix = fmt.Sprintf("--%s %g or more", RateFlag(need), most)
		}
		out = append(out, b)
	}
	slices.SortStableFunc(out, func(a, b Bound) int { return cmp.Compare(a.Rate, b.Rate) })
	return out
}

// capacity is the most requests per second of a kind the workers may send
// (+Inf: no limit), whether a budget, rather than caps, sets it, and what
// the budget would allow without the caps of the workers that have one.
func capacity(name string, workers []map[string]Flags) (rate float64, byBudget bool, ceiling float64) {
	budget, budgetedCaps, unbudgeted := math.Inf(1), 0.0, 0.0
	for _, w := range workers {
		f := w[name]
		c := f.Cap
		if c <= 0 {
			c = math.Inf(1)
		}
		if f.Budget > 0 {
			budget = min(budget, f.Budget)
			budgetedCaps += c
		} else {
			unbudgeted += c
		}
	}
	if len(workers) == 0 {
		return math.Inf(1), false, math.Inf(1)
	}
	if math.IsInf(budget, 1) {
		return unbudgeted, false, unbudgeted
	}
	return min(budget, budgetedCaps) + unbudgeted, budget <= budgetedCaps, budget + unbudgeted
}

func budgeted(name string, workers []map[string]Flags) bool {
	return slices.ContainsFunc(workers, func(w map[string]Flags) bool { return w[name].Budget > 0 })
}

// WorkersToLift is, for a worker alone held below its limits by a
// per-worker cap (a Bound of one worker's flags: need, or name itself for
// its own cap below its budget), how many workers with the same flags lift
// it: their caps add up while a budget does not (0: no number of workers
// does, up to 1,000).
func WorkersToLift(name string, flags map[string]Flags, need string) int {
	for n := 2; n <= 1000; n++ {
		if !slices.ContainsFunc(Bounds(name, slices.Repeat([]map[string]Flags{flags}, n)), func(b Bound) bool { return b.Limit == need }) {
			return n
		}
	}
	return 0
}
