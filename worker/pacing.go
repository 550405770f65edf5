package main

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/massgov/bulk-user-import/shared/budget"
	"github.com/massgov/bulk-user-import/shared/cognito"
	"github.com/massgov/bulk-user-import/shared/config"
)

// paced is one kind of request the worker paces: its per-worker rate
// flag (a cap) and its fleet budget flag.
type paced struct {
	name       string // the budget's
	rateFlag   string
	budgetFlag string
	envVar     string
	what       string
	defRate    float64
	rate, bud  float64
}

// pacingFlags are the worker's request limits.
type pacingFlags struct {
	get, create, password, fineos paced
	sync                          time.Duration
}

func (p *pacingFlags) all() []*paced { return []*paced{&p.get, &p.create, &p.password, &p.fineos} }

// define adds the flags; the budgets' defaults come from the environment.
func (p *pacingFlags) define(fs *flag.FlagSet, cfg config.Config) error {
	p.get = paced{name: budget.CognitoGet, envVar: "COGNITO_GET_BUDGET", what: "AdminGetUser requests", defRate: 20}
	p.create = paced{name: budget.CognitoCreate, envVar: "COGNITO_CREATE_BUDGET", what: "AdminCreateUser requests", defRate: 10}
	p.password = paced{name: budget.CognitoPassword, envVar: "COGNITO_PASSWORD_BUDGET", what: "AdminSetUserPassword requests", defRate: 10}
	p.fineos = paced{name: budget.Fineos, envVar: "FINEOS_BUDGET", what: "FINEOS provisioning calls", defRate: 10}
	var errs []error
	for _, x := range p.all() {
		x.rateFlag, x.budgetFlag = budget.RateFlag(x.name), budget.BudgetFlag(x.name)
		def := 0.0
		if v, ok := cfg.BudgetVars[x.envVar]; ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || f < 0 {
				errs = append(errs, fmt.Errorf("%s %q: want requests per second, 0 or more", x.envVar, v))
			}
			def = f
		}
		fs.Float64Var(&x.rate, x.rateFlag, x.defRate, x.what+" per second, this worker at most (0: no limit; with --"+x.budgetFlag+" set, no cap unless given)")
		fs.Float64Var(&x.bud, x.budgetFlag, def, x.what+" per second for all workers together, shared by the live ones and lowered when throttled (env "+x.envVar+"; 0: none, --"+x.rateFlag+" alone)")
	}
	fs.DurationVar(&p.sync, "budget-sync", budget.DefaultInterval, "how often the fleet budgets are synced through the database (one round trip each)")
	return errors.Join(errs...)
}

// resolve, after parsing: a per-worker rate that was not given is no cap
// when its budget is set (the budget governs); everything must be 0 or
// more.
func (p *pacingFlags) resolve(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	for _, x := range p.all() {
		if x.rate < 0 || x.bud < 0 {
			errs = append(errs, fmt.Errorf("--%s and --%s must be 0 or more", x.rateFlag, x.budgetFlag))
		}
		if x.bud > 0 && !given[x.rateFlag] {
			x.rate = 0
		}
	}
	if p.sync < 10*time.Millisecond || p.sync > time.Minute {
		errs = append(errs, fmt.Errorf("--budget-sync %s: want 10ms to 1m", p.sync))
	}
	return errors.Join(errs...)
}

// limits builds the limits: Cognito's pacing and FINEOS's limit.
func (p *pacingFlags) limits() (cognito.Pacing, *budget.Limit) {
	return cognito.Pacing{
		Get:         budget.New(p.get.name, p.get.bud, p.get.rate),
		Create:      budget.New(p.create.name, p.create.bud, p.create.rate),
		SetPassword: budget.New(p.password.name, p.password.bud, p.password.rate),
	}, budget.New(p.fineos.name, p.fineos.bud, p.fineos.rate)
}

// describe is the start line's view of the limits: "cognito_create:
// budget 40/s" or "rate 10/s" each.
func (p *pacingFlags) describe() string {
	var parts []string
	for _, x := range p.all() {
		switch {
		case x.bud > 0 && x.rate > 0:
			parts = append(parts, fmt.Sprintf("%s: budget %g/s, at most %g/s here", x.name, x.bud, x.rate))
		case x.bud > 0:
			parts = append(parts, fmt.Sprintf("%s: budget %g/s", x.name, x.bud))
		case x.rate > 0:
			parts = append(parts, fmt.Sprintf("%s: %g/s here", x.name, x.rate))
		default:
			parts = append(parts, x.name+": no limit")
		}
	}
	return strings.Join(parts, "; ")
}

// budgeted reports whether a fleet budget is set (the worker then listens
// for the fleet's changes on a connection of its own).
func (p *pacingFlags) budgeted() bool {
	for _, x := range p.all() {
		if x.bud > 0 {
			return true
		}
	}
	return false
}

// flags are this worker's limits, by name (a kind without one is left
// out).
func (p *pacingFlags) flags() map[string]budget.Flags {
	out := map[string]budget.Flags{}
	for _, x := range p.all() {
		if x.bud > 0 || x.rate > 0 {
			out[x.name] = budget.Flags{Budget: x.bud, Cap: x.rate}
		}
	}
	return out
}

// warnings say, at start, when a limit of the requests another needs
// holds that other below its own limits in this worker: "cognito_password
// limits cognito_create: held to 10/s by ..."; or when the per-worker cap
// of a kind holds it below its own budget: "cognito_create: held to 5/s by
// the cognito_create cap of this worker, below its budget of 40/s ...". A
// per-worker cap is this worker's; the fleet's caps add up, so the warning
// says how many workers with these flags lift it.
func (p *pacingFlags) warnings() []string {
	mine := p.flags()
	var out []string
	for _, x := range p.all() {
		for _, b := range budget.Bounds(x.name, []map[string]budget.Flags{mine}) {
			w := fmt.Sprintf("%s limits %s: %s", b.Limit, x.name, b.Text(x.name, "this worker"))
			if b.Limit == x.name {
				w = fmt.Sprintf("%s: %s", x.name, b.Text(x.name, "this worker"))
			}
			if n := budget.WorkersToLift(x.name, mine, b.Limit); b.By == "cap" && n > 0 {
				w += fmt.Sprintf(" (or run %d or more workers with these flags: their caps add up)", n)
			}
			out = append(out, w)
		}
	}
	return out
}
