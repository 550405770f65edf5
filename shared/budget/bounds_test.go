package budget

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/shared/logging"
)

// worker's flags: create, get and password, each {budget, cap}.
func flags(create, get, password Flags) map[string]Flags {
	return map[string]Flags{CognitoCreate: create, CognitoGet: get, CognitoPassword: password}
}

func times(n int, f map[string]Flags) []map[string]Flags {
	return slices.Repeat([]map[string]Flags{f}, n)
}

func TestBoundsSayWhichLimitHoldsCreatesBelowTheirOwn(t *testing.T) {
	t.Parallel()
	defaults := func(create Flags) map[string]Flags { return flags(create, Flags{Cap: 20}, Flags{Cap: 10}) }
	for _, c := range []struct {
		name    string
		workers []map[string]Flags
		want    []string // "limit by rate/allowed: fix"
	}{
		{"a create budget alone: the default caps of one worker bind", times(1, defaults(Flags{Budget: 40})), []string{
			"cognito_password cap 10/40: --cognito-password-budget 40 or more",
			"cognito_get cap 20/40: --cognito-get-budget 40 or more",
		}},
		{"three workers' caps add up, still below", times(3, defaults(Flags{Budget: 40})), []string{
			"cognito_password cap 30/40: --cognito-password-budget 40 or more",
		}},
		{"four workers' caps make the budget", times(4, defaults(Flags{Budget: 40})), nil},
		{"budgets for every step", times(1, flags(Flags{Budget: 40}, Flags{Budget: 40}, Flags{Budget: 40})), nil},
		{"a password budget below the create budget", times(2, flags(Flags{Budget: 40}, Flags{Budget: 60}, Flags{Budget: 20})), []string{
			"cognito_password budget 20/40: --cognito-password-budget 40 or more",
		}},
		{"a password cap given beside its budget", times(1, flags(Flags{Budget: 40}, Flags{Budget: 60}, Flags{Budget: 40, Cap: 5})), []string{
			"cognito_password cap 5/40: a higher --cognito-password-rate, or none (with --cognito-password-budget, a worker is capped only when it is given)",
		}},
		{"the create cap of one worker below its budget", times(1, defaults(Flags{Budget: 40, Cap: 5})), []string{
			"cognito_create cap 5/40: a higher --cognito-create-rate, or none (with --cognito-create-budget, a worker is capped only when it is given)",
		}},
		{"four workers' create caps below their budget", times(4, defaults(Flags{Budget: 40, Cap: 5})), []string{
			"cognito_create cap 20/40: a higher --cognito-create-rate, or none (with --cognito-create-budget, a worker is capped only when it is given)",
		}},
		{"eight workers' create caps make the budget", times(8, defaults(Flags{Budget: 40, Cap: 5})), nil},
		{"the create caps and a lower password cap: the lowest first", times(1, defaults(Flags{Budget: 40, Cap: 20})), []string{
			"cognito_password cap 10/20: --cognito-password-budget 20 or more",
			"cognito_create cap 20/40: a higher --cognito-create-rate, or none (with --cognito-create-budget, a worker is capped only when it is given)",
		}},
		{"a capped worker beside an uncapped one", []map[string]Flags{
			flags(Flags{Budget: 40, Cap: 5}, Flags{Budget: 40}, Flags{Budget: 40}), flags(Flags{Budget: 40}, Flags{Budget: 40}, Flags{Budget: 40}),
		}, nil},
		{"the defaults without budgets", times(3, defaults(Flags{Cap: 10})), nil},
		{"caps alone: the password cap below the create cap", times(2, defaults(Flags{Cap: 20})), []string{
			"cognito_password cap 20/40: --cognito-password-rate 20 or more",
		}},
		{"creates without a limit", times(1, defaults(Flags{})), nil},
		{"workers that disagree: the smallest create budget", []map[string]Flags{defaults(Flags{Budget: 20}), defaults(Flags{Budget: 40})}, nil},
		{"no worker", nil, nil},
		{"a worker of nothing but a create budget", []map[string]Flags{{CognitoCreate: {Budget: 40}}}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, b := range Bounds(CognitoCreate, c.workers) {
				got = append(got, fmt.Sprintf("%s %s %g/%g: %s", b.Limit, b.By, b.Rate, b.Allowed, b.Fix))
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("got %q\nwant %q", got, c.want)
			}
		})
	}
	if b := Bounds(CognitoGet, times(1, defaults(Flags{Budget: 40}))); b != nil {
		t.Errorf("a limit that needs no other: %v", b)
	}
}

func TestWorkersToLiftACap(t *testing.T) {
	t.Parallel()
	one := flags(Flags{Budget: 40}, Flags{Cap: 20}, Flags{Cap: 10})
	if n := WorkersToLift(CognitoCreate, one, CognitoPassword); n != 4 {
		t.Errorf("password caps of 10 under a create budget of 40: %d workers, want 4", n)
	}
	if n := WorkersToLift(CognitoCreate, one, CognitoGet); n != 2 {
		t.Errorf("get caps of 20: %d workers, want 2", n)
	}
	if n := WorkersToLift(CognitoCreate, flags(Flags{Budget: 40, Cap: 5}, Flags{Budget: 40}, Flags{Budget: 40}), CognitoCreate); n != 8 {
		t.Errorf("create caps of 5 under a create budget of 40: %d workers, want 8", n)
	}
	if n := WorkersToLift(CognitoCreate, flags(Flags{Budget: 40}, Flags{Cap: 20}, Flags{Budget: 10}), CognitoPassword); n != 0 {
		t.Errorf("a password budget: %d workers, want none", n)
	}
}

func TestABoundSaysItPlainly(t *testing.T) {
	t.Parallel()
	b := Bounds(CognitoCreate, times(1, flags(Flags{Budget: 40}, Flags{Budget: 40}, Flags{Cap: 10})))
	if len(b) != 1 {
		t.Fatalf("%v", b)
	}
	want := "held to 10/s by the cognito_password cap of this worker, below the 40/s its own limits allow (each AdminCreateUser needs an AdminSetUserPassword): set --cognito-password-budget 40 or more"
	if got := b[0].Text(CognitoCreate, "this worker"); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestACapBelowItsOwnBudgetSaysItPlainly(t *testing.T) {
	t.Parallel()
	b := Bounds(CognitoCreate, times(4, flags(Flags{Budget: 40, Cap: 5}, Flags{Budget: 40}, Flags{Budget: 40})))
	if len(b) != 1 {
		t.Fatalf("%v", b)
	}
	want := "held to 20/s by the cognito_create cap of the live workers, below its budget of 40/s: set a higher --cognito-create-rate, or none (with --cognito-create-budget, a worker is capped only when it is given)"
	if got := b[0].Text(CognitoCreate, "the live workers"); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// Status names the live workers' own caps when they hold a budget below
// itself: four workers capped at 5/s under a create budget of 40/s.
func TestStatusSaysWhenTheWorkersCapsHoldABudgetBelowItself(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c", "d"} {
		create, get, password := New(CognitoCreate, 40, 5), New(CognitoGet, 60, 0), New(CognitoPassword, 40, 0)
		t.Cleanup(func() { create.Close(); get.Close(); password.Close() })
		if err := NewFleet(pool, id, time.Second, logging.Discard(), create, get, password).Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	st, err := Read(ctx, pool, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Name != CognitoCreate {
			continue
		}
		want := Bound{Limit: CognitoCreate, By: "cap", Rate: 20, Allowed: 40,
			Fix: "a higher --cognito-create-rate, or none (with --cognito-create-budget, a worker is capped only when it is given)"}
		if s.BoundBy == nil || *s.BoundBy != want {
			t.Fatalf("status: %+v, want %+v", s.BoundBy, want)
		}
		return
	}
	t.Fatalf("no create budget in %+v", st)
}

// Only the workers with work share a budget, so only their caps add up:
// four capped at 5/s, two of them idle, hold it to 10/s.
func TestStatusCountsTheCapsOfTheBusyWorkersOnly(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	ctx := context.Background()
	bound := func() *Bound {
		t.Helper()
		st, err := Read(ctx, pool, 10*time.Second)
		if err != nil || len(st) != 1 {
			t.Fatalf("read: %+v, %v", st, err)
		}
		return st[0].BoundBy
	}
	var fleets []*Fleet
	for i, id := range []string{"a", "b", "c", "d"} {
		l := New(CognitoCreate, 40, 5)
		t.Cleanup(l.Close)
		f := NewFleet(pool, id, time.Second, logging.Discard(), l)
		f.started = time.Time{}
		idle := i >= 2
		f.Watch(func() time.Time { return time.Time{} }, func() int64 {
			if idle {
				return 0
			}
			return 1
		})
		fleets = append(fleets, f)
	}
	for _, f := range fleets {
		if err := f.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if b := bound(); b == nil || b.Rate != 10 {
		t.Fatalf("two busy workers capped at 5/s: %+v, want held to 10/s", b)
	}
}
