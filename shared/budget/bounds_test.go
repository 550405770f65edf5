package budget

import (
	"fmt"
	"slices"
	"testing"
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
		{"the create cap of one worker below its budget", times(1, defaults(Flags{Budget: 40, Cap: 5})), nil},
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
