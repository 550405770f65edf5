package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/budget"
	"github.com/massgov/bulk-user-import/shared/cli"
	"github.com/massgov/bulk-user-import/shared/cognito"
	"github.com/massgov/bulk-user-import/shared/config"
	"github.com/massgov/bulk-user-import/shared/dbpool"
	"github.com/massgov/bulk-user-import/shared/plan"
	"github.com/massgov/bulk-user-import/shared/source"
)

const planUsage = `Usage: splitter plan [flags] SOURCE...

Tells what an import of the sources would do against today's data, and
changes nothing: no message, no database row, no Cognito or FINEOS user.
Exit 0 when no row would fail, 3 when some would, 1 on errors (or a
refused source), 2 on usage errors. Flags:
`

// runPlan is "splitter plan": read only.
func runPlan(args []string, cfg config.Config, stdout io.Writer, stderr *os.File) int {
	fs := flag.NewFlagSet("splitter plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, planUsage)
		fs.PrintDefaults()
	}
	asJSON := fs.Bool("json", false, "print one JSON object")
	force := fs.Bool("force-registration", false, "plan an import with --force-registration (FINEOS)")
	maxLines := fs.Int("max-lines", plan.DefaultMaxLines, "line numbers listed per reason, failure and employer")
	concurrency := fs.Int("lookup-concurrency", plan.DefaultConcurrency, "Cognito lookups (AdminGetUser) in flight")
	lookupRate := fs.Float64("lookup-rate", 0, "AdminGetUser requests per second this plan sends (0: one more worker's share of the fleet's cognito_get budget)")
	given := map[string]*float64{}
	for _, name := range plan.Names {
		given[name] = fs.Float64(budget.BudgetFlag(name), 0, "for the estimate: the fleet's "+name+" budget, requests per second (0: the live budget in the database, else env "+plan.EnvVar(name)+", else a worker's default rate per live worker)")
	}
	logFormat := fs.String("log-format", cmp.Or(cfg.LogFormat, "auto"), "log format: json, text or auto (env LOG_FORMAT)")
	logLevel := fs.String("log-level", cmp.Or(cfg.LogLevel, "info"), "log level (env LOG_LEVEL)")
	sources, err := cli.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return cli.ExitOK
	}
	if err != nil {
		return cli.ExitUsage
	}
	if len(sources) == 0 {
		fs.Usage()
		fmt.Fprintln(stderr, "\nsplitter plan: no SOURCE given")
		return cli.ExitUsage
	}
	rates := map[string]float64{}
	bad := *maxLines < 0 || *concurrency < 1 || *lookupRate < 0
	for name, v := range given {
		rates[name] = *v
		bad = bad || *v < 0
	}
	if bad {
		fmt.Fprintln(stderr, "splitter plan: --lookup-concurrency must be positive; --max-lines, --lookup-rate and the budgets 0 or more")
		return cli.ExitUsage
	}
	log, err := cli.Logger(stderr, *logFormat, *logLevel)
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitUsage
	}
	if err := cfg.Require(config.Database, config.Cognito); err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitUsage
	}
	ctx, stop := cli.SignalContext(log)
	defer stop()

	pool, err := dbpool.Open(ctx, cfg.DatabaseURL, 4, "bui splitter plan")
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	defer pool.Close()
	fl, err := plan.ReadFleet(ctx, pool, rates, cfg.BudgetVars)
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	awsCfg, err := awsconf.Load(ctx, cfg.Region)
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	// The lookups take tokens of the fleet's read budget as a worker's
	// AdminGetUser does: through the client's pacing.
	rate := cmp.Or(*lookupRate, fl.LookupRate())
	pacing := cognito.Pacing{Get: budget.New(budget.CognitoGet, 0, rate)}
	defer pacing.Close()
	p := &plan.Planner{
		Opener:  source.Opener{S3: awsconf.S3(awsCfg)},
		DB:      pool,
		Cognito: cognito.New(awsconf.Cognito(awsCfg, pacing.Option()), cfg.UserPoolID),
	}
	rep, err := p.Plan(ctx, plan.Options{Sources: sources, ForceRegistration: *force, MaxLines: *maxLines, Concurrency: *concurrency})
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	rep.EstimateUnder(fl)
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(rep); err != nil {
			return cli.ExitError
		}
	} else {
		printPlan(stdout, rep, rate)
	}
	switch {
	case rep.Refused > 0:
		return cli.ExitError
	case rep.Fails():
		return cli.ExitProblems
	}
	return cli.ExitOK
}

// printPlan prints a plan for a person. Emails never appear; FEINs are
// masked by the plan.
func printPlan(w io.Writer, r *plan.Report, lookupRate float64) {
	force := ""
	if r.ForceRegistration {
		force = " with --force-registration"
	}
	fmt.Fprintf(w, "plan of an import%s (read only: nothing was written, sent or created)\n", force)
	for _, s := range r.Sources {
		switch {
		case s.Error != "":
			fmt.Fprintf(w, "  REFUSED %s\n", s.Error)
		case s.Skipped:
			fmt.Fprintf(w, "  %s: named twice, read once\n", s.Source)
		default:
			fmt.Fprintf(w, "  %s: %d rows: %d accepted, %d rejected, %d duplicate\n", s.Source, s.Rows, s.Accepted, s.Rejected, s.Duplicates)
		}
	}
	fmt.Fprintf(w, "rows:      %d total, %d rejected, %d duplicate, %d would be sent to the workers\n", r.Rows, r.Rejected, r.Duplicates, r.Accepted)
	for _, rs := range r.RejectedByReason {
		fmt.Fprintf(w, "  rejected %s: %s\n", rs.Code, lines(rs.Lines))
	}
	fmt.Fprintf(w, "outcome:   %d rows would succeed, %d would fail\n", r.WouldSucceed, r.WouldFail)
	for _, rs := range r.FailuresByCode {
		fmt.Fprintf(w, "  would fail %s: %s\n", rs.Code, lines(rs.Lines))
	}
	fmt.Fprintf(w, "people:    %d emails: %d have a Cognito user, %d would be created, %d not reached (their rows fail first), %d in conflict (EMAIL_CONFLICT)\n",
		r.Emails, r.CognitoExisting, r.CognitoNew, r.CognitoNotReached, r.EmailConflicts)
	fmt.Fprintf(w, "           PFML users: %d exist, %d would be created\n", r.PFMLUsersExisting, r.PFMLUsersNew)
	fmt.Fprintf(w, "links:     %d exist (nothing to do), %d would be created", r.LinksExisting, r.LinksNew)
	if r.ForceRegistration {
		fmt.Fprintf(w, "; FINEOS: %d registered already, %d to register", r.FineosRegistered, r.Calls.Fineos)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "employers: %d not found (EMPLOYER_NOT_FOUND), %d without a FINEOS id (FINEOS_EMPLOYER_MISSING with --force-registration), %d ambiguous\n",
		r.EmployersNotFound, r.EmployersNoFineosID, r.EmployersAmbiguous)
	for _, e := range r.Employers {
		note := ""
		if !e.Fails {
			note = " (fine without --force-registration)"
		}
		fmt.Fprintf(w, "  %s %s%s: %s\n", e.FEIN, strings.ReplaceAll(e.Problem, "_", " "), note, lines(e.Lines))
	}
	fmt.Fprintf(w, "calls:     %d Cognito (%d AdminGetUser, %d AdminCreateUser, %d AdminSetUserPassword), %d FINEOS\n",
		r.CognitoCalls, r.Calls.CognitoGet, r.Calls.CognitoCreate, r.Calls.CognitoPassword, r.Calls.Fineos)
	if r.Binding == "" {
		fmt.Fprintln(w, "estimate:  no call to make")
	} else {
		fmt.Fprintf(w, "estimate:  at least %ds under the fleet's budgets; %s binds\n", r.EstimatedSeconds, r.Binding)
	}
	for _, b := range r.Budgets {
		fmt.Fprintf(w, "  %-16s %6d calls at %g/s (%s): %.1fs\n", b.Name, b.Calls, b.Rate, b.Source, b.Seconds)
	}
	fmt.Fprintf(w, "this plan sent %d AdminGetUser lookups, at most %.3g/s\n", r.CognitoLookups, lookupRate)
}

// lines: "3 rows (a.csv:4, a.csv:9, … and 1 more)".
func lines(l plan.Lines) string {
	s := fmt.Sprintf("%d rows", l.Rows)
	if l.Rows == 1 {
		s = "1 row"
	}
	if len(l.Lines) == 0 {
		return s
	}
	s += " (" + strings.Join(l.Lines, ", ")
	if l.More > 0 {
		s += fmt.Sprintf(", … and %d more", l.More)
	}
	return s + ")"
}
