package main

import (
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/massgov/bulk-user-import/shared/config"
)

func TestTheStartSaysWhichLimitHoldsCreatesBack(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		env  map[string]string
		want []string
	}{
		{nil, nil, nil}, // the defaults: 10 creates, 10 passwords, 20 gets a second
		{[]string{"--cognito-create-budget", "40"}, nil, []string{
			"cognito_password limits cognito_create: held to 10/s by the cognito_password cap of this worker, below the 40/s its own limits allow (each AdminCreateUser needs an AdminSetUserPassword): set --cognito-password-budget 40 or more (or run 4 or more workers with these flags: their caps add up)",
			"cognito_get limits cognito_create: held to 20/s by the cognito_get cap of this worker, below the 40/s its own limits allow (each AdminCreateUser needs an AdminGetUser): set --cognito-get-budget 40 or more (or run 2 or more workers with these flags: their caps add up)",
		}},
		{nil, map[string]string{"COGNITO_CREATE_BUDGET": "40", "COGNITO_PASSWORD_BUDGET": "40", "COGNITO_GET_BUDGET": "80"}, nil},
		{[]string{"--cognito-create-budget", "40", "--cognito-password-budget", "30", "--cognito-get-budget", "40"}, nil, []string{
			"cognito_password limits cognito_create: held to 30/s by the cognito_password budget, below the 40/s its own limits allow (each AdminCreateUser needs an AdminSetUserPassword): set --cognito-password-budget 40 or more",
		}},
		// A create cap of this worker below the budget: it binds (the needs
		// follow it), and eight workers lift it, or four.
		{[]string{"--cognito-create-budget", "40", "--cognito-create-rate", "5"}, nil, []string{
			"cognito_create: held to 5/s by the cognito_create cap of this worker, below its budget of 40/s: set a higher --cognito-create-rate, or none (with --cognito-create-budget, a worker is capped only when it is given) (or run 8 or more workers with these flags: their caps add up)",
		}},
		{[]string{"--cognito-create-budget", "40", "--cognito-create-rate", "10"}, nil, []string{
			"cognito_create: held to 10/s by the cognito_create cap of this worker, below its budget of 40/s: set a higher --cognito-create-rate, or none (with --cognito-create-budget, a worker is capped only when it is given) (or run 4 or more workers with these flags: their caps add up)",
		}},
		{[]string{"--cognito-create-budget", "40", "--cognito-create-rate", "40"}, nil, []string{
			"cognito_password limits cognito_create: held to 10/s by the cognito_password cap of this worker, below the 40/s its own limits allow (each AdminCreateUser needs an AdminSetUserPassword): set --cognito-password-budget 40 or more (or run 4 or more workers with these flags: their caps add up)",
			"cognito_get limits cognito_create: held to 20/s by the cognito_get cap of this worker, below the 40/s its own limits allow (each AdminCreateUser needs an AdminGetUser): set --cognito-get-budget 40 or more (or run 2 or more workers with these flags: their caps add up)",
		}},
		{[]string{"--cognito-create-rate", "15"}, nil, []string{
			"cognito_password limits cognito_create: held to 10/s by the cognito_password cap of this worker, below the 15/s its own limits allow (each AdminCreateUser needs an AdminSetUserPassword): set --cognito-password-rate 15 or more",
		}},
		{[]string{"--cognito-create-rate", "0"}, nil, nil}, // no limit to hold back
	} {
		f, err := parseFlags(c.args, config.Config{BudgetVars: c.env}, io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if got := f.pacing.warnings(); !slices.Equal(got, c.want) {
			t.Errorf("%v %v:\ngot  %s\nwant %s", c.args, c.env, strings.Join(got, "\n     "), strings.Join(c.want, "\n     "))
		}
	}
}
