// Command splitter records the rows of one or more CSV files as an import
// job and sends one SQS message per row for the workers; it also reports
// on jobs and cancels them.
//
// Usage:
//
//	splitter [flags] SOURCE...          import (SOURCE: a path or s3://bucket/key)
//	splitter status JOB [--json]        a job's rows by state, failures, rate
//	splitter report JOB [--out DIR]     write SUCCEEDED.csv and FAILED.csv locally
//	splitter cancel JOB [--reason TEXT] stop a job: its queued rows are cancelled
//	splitter jobs [--limit N] [--json]  recent jobs
//	splitter wait JOB                   wait for a job and print its summary
//	splitter resend JOB [--older-than D] send again the messages of queued rows
//	splitter plan SOURCE... [--json]   what an import would do; changes nothing
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/budget"
	"github.com/massgov/bulk-user-import/shared/cli"
	"github.com/massgov/bulk-user-import/shared/config"
	"github.com/massgov/bulk-user-import/shared/dbpool"
	"github.com/massgov/bulk-user-import/shared/enqueue"
	"github.com/massgov/bulk-user-import/shared/fleet"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/maintain"
	"github.com/massgov/bulk-user-import/shared/progress"
	"github.com/massgov/bulk-user-import/shared/queue"
	"github.com/massgov/bulk-user-import/shared/results"
	"github.com/massgov/bulk-user-import/shared/source"
	"github.com/massgov/bulk-user-import/shared/split"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

const usage = `Usage:
  splitter [flags] SOURCE...          import the rows of the sources as one job
  splitter status JOB [--json]        a job's rows by state, failures by code, rate
  splitter report JOB [--out DIR]     write the job's SUCCEEDED.csv and FAILED.csv (and PENDING.csv) locally
  splitter cancel JOB [--reason TEXT] stop a job: workers skip its remaining rows
  splitter jobs [--limit N] [--json]  recent jobs
  splitter wait JOB                   wait until the job is done and its result files written (after a replay, say)
  splitter resend JOB [--older-than D] [--dry-run]
                                      send again the messages of the job's queued rows (after the queue was purged, say)
  splitter plan SOURCE... [--json] [--force-registration]
                                      what an import of the sources would do against today's data; changes nothing

SOURCE is a local path or s3://bucket/key. Flags may come before or after
the sources. Import flags:
`

func run(args []string, getenv func(string) string, stdout io.Writer, stderr *os.File) int {
	cfg := config.FromEnv(getenv)
	if len(args) > 0 {
		switch args[0] {
		case "status":
			return runStatus(args[1:], cfg, stdout, stderr)
		case "report":
			return runReport(args[1:], cfg, stdout, stderr)
		case "cancel":
			return runCancel(args[1:], cfg, stdout, stderr)
		case "jobs":
			return runJobs(args[1:], cfg, stdout, stderr)
		case "wait":
			return runWait(args[1:], cfg, stdout, stderr)
		case "resend":
			return runResend(args[1:], cfg, stdout, stderr)
		case "plan":
			return runPlan(args[1:], cfg, stdout, stderr)
		}
	}
	return runImport(args, cfg, stdout, stderr)
}

type importFlags struct {
	job, logFormat, logLevel string
	force, dryRun, wait      bool
	pollInterval             time.Duration
	progressInterval         time.Duration
	sendConcurrency          int
	limits                   jobs.Limits
}

func runImport(args []string, cfg config.Config, stdout io.Writer, stderr *os.File) int {
	var f importFlags
	fs := flag.NewFlagSet("splitter", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&f.job, "job", "", "job id: resume this job, or name a new one (default: a new id, printed)")
	fs.BoolVar(&f.force, "force-registration", false, "also register each leave administrator in FINEOS")
	fs.BoolVar(&f.dryRun, "dry-run", false, "validate the sources and print counts; write and send nothing")
	fs.BoolVar(&f.wait, "wait", false, "wait until every row is final and print the summary (exit 3 if any row failed, was rejected or cancelled)")
	fs.DurationVar(&f.pollInterval, "poll-interval", 2*time.Second, "with --wait, how often to check the job")
	fs.DurationVar(&f.progressInterval, "progress-interval", 10*time.Second, "when output is not a terminal, how often a progress line is printed")
	fs.IntVar(&f.sendConcurrency, "send-concurrency", 8, "SendMessageBatch calls in flight")
	fs.IntVar(&f.limits.MaxFailures, "max-failures", 0, "cancel the job when more rows than this fail (0: no limit)")
	fs.Float64Var(&f.limits.MaxFailureRatio, "max-failure-ratio", 0, "cancel the job when more than this share (0..1) of finished rows failed, after --min-sample rows (0: no limit)")
	fs.IntVar(&f.limits.MinSample, "min-sample", jobs.DefaultMinSample, "rows that must be finished before --max-failure-ratio is checked")
	fs.StringVar(&f.logFormat, "log-format", cmp.Or(cfg.LogFormat, "auto"), "log format: json, text or auto (env LOG_FORMAT)")
	fs.StringVar(&f.logLevel, "log-level", cmp.Or(cfg.LogLevel, "info"), "log level (env LOG_LEVEL)")
	sources, err := cli.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return cli.ExitOK
	}
	if err != nil {
		return cli.ExitUsage
	}
	if len(sources) == 0 {
		fs.Usage()
		fmt.Fprintln(stderr, "\nsplitter: no SOURCE given")
		return cli.ExitUsage
	}
	if f.pollInterval <= 0 || f.sendConcurrency < 1 || f.limits.MaxFailures < 0 || f.limits.MaxFailureRatio < 0 ||
		f.limits.MaxFailureRatio > 1 || f.limits.MinSample < 1 {
		fmt.Fprintln(stderr, "splitter: --poll-interval, --send-concurrency and --min-sample must be positive; --max-failures 0 or more; --max-failure-ratio between 0 and 1")
		return cli.ExitUsage
	}
	log, err := cli.Logger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitUsage
	}
	ctx, stop := cli.SignalContext(log)
	defer stop()

	if f.dryRun {
		return dryRun(ctx, cfg, sources, stdout, stderr)
	}
	if err := cfg.Require(config.Database, config.Queue); err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitUsage
	}
	if f.job == "" {
		f.job = newJobID()
	}
	store, pool, err := openStore(ctx, cfg.DatabaseURL, int32(4+f.sendConcurrency))
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	defer pool.Close()
	dbpool.WarnParameterLogging(ctx, pool, log)
	awsCfg, err := awsconf.Load(ctx, cfg.Region)
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	tty := progress.IsTerminal(stderr)
	bar := progress.New(stderr, tty, f.progressInterval)
	lc := newLifecycle(pool, store, awsCfg, cfg, log)
	sp := &split.Splitter{
		Lifecycle:       lc,
		Queue:           queue.New(awsconf.SQS(awsCfg), cfg.QueueURL),
		Opener:          source.Opener{S3: awsconf.S3(awsCfg)},
		Log:             log,
		SendConcurrency: f.sendConcurrency,
		Progress:        splitProgress{bar: bar},
		Finisher:        lc,
	}
	fmt.Fprintf(stdout, "job %s\n", f.job)
	res, err := sp.Run(ctx, split.Options{Job: f.job, ForceRegistration: f.force, Sources: sources, Limits: f.limits})
	bar.Done()
	printRun(stdout, res)
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	code := cli.ExitOK
	if len(res.Refused()) > 0 {
		code = cli.ExitError
	}
	if !f.wait {
		return code
	}
	if wcode := waitAndSummarize(ctx, store, f.job, f.pollInterval, bar, stdout, stderr); code == cli.ExitOK {
		code = wcode
	}
	return code
}

// waitAndSummarize waits for the job, prints its summary with the failed
// rows, and returns ExitProblems when any row failed, was rejected or was
// cancelled.
func waitAndSummarize(ctx context.Context, store *jobs.Store, job string, every time.Duration, bar *progress.Bar, stdout io.Writer, stderr *os.File) int {
	fmt.Fprintf(stdout, "waiting for the workers (Ctrl-C stops waiting, not the job; see: splitter status %s)\n", job)
	st, err := wait(ctx, store, job, every, bar, stderr)
	bar.Done()
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	probs, err := store.Problems(context.WithoutCancel(ctx), job, 50)
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	printSummary(stdout, st, probs)
	if st.Failed+st.Rejected+st.Cancelled > 0 {
		return cli.ExitProblems
	}
	return cli.ExitOK
}

func runWait(args []string, cfg config.Config, stdout io.Writer, stderr *os.File) int {
	c := newJobCommand("wait", "JOB [--poll-interval D]", cfg, stderr)
	every := c.fs.Duration("poll-interval", 2*time.Second, "how often to check the job")
	interval := c.fs.Duration("progress-interval", 10*time.Second, "when output is not a terminal, how often a progress line is printed")
	ctx, stop := cli.SignalContext(c.log)
	defer stop()
	if code := c.parse(ctx, args, cfg, true, stderr); code >= 0 {
		return code
	}
	defer c.close()
	if *every <= 0 {
		fmt.Fprintln(stderr, "splitter wait: --poll-interval must be positive")
		return cli.ExitUsage
	}
	if _, err := c.store.Job(ctx, c.job); err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	return waitAndSummarize(ctx, c.store, c.job, *every, progress.New(stderr, progress.IsTerminal(stderr), *interval), stdout, stderr)
}

// splitProgress shows the splitter's reading and sending.
type splitProgress struct{ bar *progress.Bar }

func (p splitProgress) Reading(src string, read, size int64) {
	p.bar.Update("reading "+src+" (bytes)", read, size, "")
}

func (p splitProgress) Sending(sent, total int64) {
	p.bar.Update("sending messages", sent, total, "")
}

// wait polls the job until it is done and its result files are handled,
// showing rows finished with the recent rate and failures. When every row
// is final but no completion is recorded for a while, it says why it is
// still waiting.
func wait(ctx context.Context, store *jobs.Store, job string, every time.Duration, bar *progress.Bar, stderr io.Writer) (jobs.Status, error) {
	start := time.Now()
	var first *jobs.Status
	var finalSince time.Time
	noted := false
	return split.Wait(ctx, store, job, every, func(st jobs.Status) {
		if first == nil {
			first = &st
		}
		final := st.Total - st.Queued
		rate := float64(final-(first.Total-first.Queued)) / max(time.Since(start).Seconds(), 1)
		bar.Update("rows final", final, st.Total, fmt.Sprintf("%.1f rows/s, %d succeeded, %d failed, %d rejected, %d cancelled",
			rate, st.Succeeded, st.Failed, st.Rejected, st.Cancelled))
		switch {
		case st.Queued > 0 || st.Done:
			finalSince = time.Time{}
		case finalSince.IsZero():
			finalSince = time.Now()
		case !noted && time.Since(finalSince) > completionHint:
			noted = true
			bar.Done()
			if !st.Recorded {
				fmt.Fprintf(stderr, "not every source of the job is recorded (a splitter run stopped): run the splitter again with --job %s and the same sources\n", job)
			} else {
				fmt.Fprintf(stderr, "every row is final; waiting for a worker's maintainer to record the job's completion and write its result files (is a worker running?)\n")
			}
		}
	})
}

// completionHint is how long wait lets every row be final without a
// recorded completion before it says what it waits for.
const completionHint = 30 * time.Second

func dryRun(ctx context.Context, cfg config.Config, sources []string, stdout io.Writer, stderr *os.File) int {
	opener := source.Opener{}
	if needsS3(sources) {
		awsCfg, err := awsconf.Load(ctx, cfg.Region)
		if err != nil {
			cli.PrintError(stderr, "splitter", err)
			return cli.ExitError
		}
		opener.S3 = awsconf.S3(awsCfg)
	}
	res, err := split.DryRun(ctx, opener, sources, 50)
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	printDryRun(stdout, res)
	if len(split.Refused(res.Sources)) > 0 {
		return cli.ExitError
	}
	return cli.ExitOK
}

// jobCommand parses "splitter CMD JOB [flags]" and opens the store.
type jobCommand struct {
	name  string
	fs    *flag.FlagSet
	log   *slog.Logger // LOG_FORMAT and LOG_LEVEL's
	job   string
	store *jobs.Store
	pool  *pgxpool.Pool
}

func (c *jobCommand) close() { c.pool.Close() }

func newJobCommand(name, args string, cfg config.Config, stderr *os.File) *jobCommand {
	fs := flag.NewFlagSet("splitter "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: splitter %s %s\n", name, args)
		fs.PrintDefaults()
	}
	log, err := cli.Logger(stderr, cmp.Or(cfg.LogFormat, "auto"), cmp.Or(cfg.LogLevel, "info"))
	if err != nil {
		log, _ = logging.New(stderr, logging.Text, "info") // a bad LOG_FORMAT or LOG_LEVEL: the defaults
	}
	return &jobCommand{name: name, fs: fs, log: log}
}

// parse reads the arguments (a job id unless wantJob is false), checks the
// configuration and connects; a non-negative exit code means stop now.
func (c *jobCommand) parse(ctx context.Context, args []string, cfg config.Config, wantJob bool, stderr io.Writer) int {
	pos, err := cli.Parse(c.fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return cli.ExitOK
	}
	if err != nil {
		return cli.ExitUsage
	}
	if wantJob != (len(pos) == 1) || len(pos) > 1 {
		c.fs.Usage()
		return cli.ExitUsage
	}
	if wantJob {
		c.job = pos[0]
	}
	if err := cfg.Require(config.Database); err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitUsage
	}
	c.store, c.pool, err = openStore(ctx, cfg.DatabaseURL, 4)
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	return -1
}

func runStatus(args []string, cfg config.Config, stdout io.Writer, stderr *os.File) int {
	c := newJobCommand("status", "JOB [--json]", cfg, stderr)
	asJSON := c.fs.Bool("json", false, "print one JSON object")
	ctx := context.Background()
	if code := c.parse(ctx, args, cfg, true, stderr); code >= 0 {
		return code
	}
	defer c.close()
	st, err := c.store.Status(ctx, c.job)
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	d, err := c.store.Details(ctx, c.job)
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	var fl fleetState
	if fl.Maintainer.ID, fl.Maintainer.Live, _, err = maintain.Leader(ctx, c.pool, maintain.LeaseName); err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	if fl.Workers, err = fleet.Live(ctx, c.pool); err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	if fl.Budgets, err = budget.Read(ctx, c.pool, 10*time.Second); err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	fl.Database = databaseState(ctx, c.pool, fl.Workers, c.log)
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(struct {
			jobs.Status
			jobs.Details
			fleetState
		}{st, d, fl}); err != nil {
			return cli.ExitError
		}
		return cli.ExitOK
	}
	printStatus(stdout, st, d, fl, time.Now())
	return cli.ExitOK
}

// databaseState adds up the live workers' connections and reads the
// server's limit (left at 0 when it cannot be read: status goes on).
func databaseState(ctx context.Context, pool *pgxpool.Pool, workers []fleet.Worker, log *slog.Logger) *dbState {
	sum, n := fleet.SumConns(workers)
	d := &dbState{Workers: n, Unreported: len(workers) - n, Usage: sum}
	if h, err := dbpool.CheckHeadroom(ctx, pool); err != nil {
		log.Debug("cannot read the server's connection limit", "err", err)
	} else {
		d.ServerMax, d.ServerReserved, d.ServerOpen = h.MaxConnections, h.Reserved, h.InUse
	}
	return d
}

func runReport(args []string, cfg config.Config, stdout io.Writer, stderr *os.File) int {
	c := newJobCommand("report", "JOB [--out DIR]", cfg, stderr)
	out := c.fs.String("out", ".", "directory to write the files to")
	ctx := context.Background()
	if code := c.parse(ctx, args, cfg, true, stderr); code >= 0 {
		return code
	}
	defer c.close()
	if _, err := c.store.Job(ctx, c.job); err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	counts, err := results.WriteDir(ctx, c.store, c.job, *out)
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	fmt.Fprintf(stdout, "wrote %s/%s (%d rows) and %s/%s (%d rows)\n", *out, results.FileSucceeded, counts.Succeeded, *out, results.FileFailed, counts.Failed)
	if counts.Pending > 0 {
		fmt.Fprintf(stdout, "partial report: %d rows are still pending, listed in %s/%s\n", counts.Pending, *out, results.FilePending)
	}
	return cli.ExitOK
}

func runCancel(args []string, cfg config.Config, stdout io.Writer, stderr *os.File) int {
	c := newJobCommand("cancel", "JOB [--reason TEXT]", cfg, stderr)
	reason := c.fs.String("reason", "cancelled by an operator", "why, for the reports")
	ctx := context.Background()
	if code := c.parse(ctx, args, cfg, true, stderr); code >= 0 {
		return code
	}
	defer c.close()
	awsCfg, err := awsconf.Load(ctx, cfg.Region)
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	lc := newLifecycle(c.pool, c.store, awsCfg, cfg, c.log)
	n, err := lc.Cancel(ctx, c.job, *reason)
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	fmt.Fprintf(stdout, "job %s cancelled: %d queued rows cancelled; rows being registered right now finish; workers drop the job's messages\n", c.job, n)
	lc.Finish(ctx, c.job)
	return cli.ExitOK
}

func runResend(args []string, cfg config.Config, stdout io.Writer, stderr *os.File) int {
	c := newJobCommand("resend", "JOB [--older-than D] [--dry-run]", cfg, stderr)
	var olderThan time.Duration
	cli.DurationVar(c.fs, &olderThan, "older-than", 0, "only rows with no sign of life (sent, received by a worker) for this long (0: every queued row)")
	dryRun := c.fs.Bool("dry-run", false, "count the rows whose messages would be sent again; send nothing")
	ctx, stop := cli.SignalContext(c.log)
	defer stop()
	if code := c.parse(ctx, args, cfg, true, stderr); code >= 0 {
		return code
	}
	defer c.close()
	if err := cfg.Require(config.Queue); err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitUsage
	}
	if olderThan < 0 {
		fmt.Fprintln(stderr, "splitter resend: --older-than must be 0 or more")
		return cli.ExitUsage
	}
	job, err := c.store.Job(ctx, c.job)
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	switch {
	case job.CancelledAt != nil:
		fmt.Fprintf(stderr, "splitter: job %s: %v: its rows are not sent again\n", c.job, jobs.ErrCancelled)
		return cli.ExitError
	case job.PrunedAt != nil:
		fmt.Fprintf(stderr, "splitter: job %s: %v\n", c.job, jobs.ErrPruned)
		return cli.ExitError
	}
	awsCfg, err := awsconf.Load(ctx, cfg.Region)
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	lc := lifecycle.New(c.pool, nil, c.log)
	e := &enqueue.Enqueuer{Jobs: c.store, Book: lc, Queue: queue.New(awsconf.SQS(awsCfg), cfg.QueueURL)}
	n, err := e.Resend(ctx, job, jobs.Selection{IdleFor: olderThan}, *dryRun)
	which := "queued rows"
	if olderThan > 0 {
		which = "queued rows idle for " + olderThan.String() + " or more"
	}
	if *dryRun {
		fmt.Fprintf(stdout, "job %s: %d messages would be sent again (%s; dry run: nothing sent)\n", c.job, n, which)
	} else {
		fmt.Fprintf(stdout, "job %s: sent %d messages again (%s)\n", c.job, n, which)
	}
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	return cli.ExitOK
}

func runJobs(args []string, cfg config.Config, stdout io.Writer, stderr *os.File) int {
	c := newJobCommand("jobs", "[--limit N] [--json]", cfg, stderr)
	limit := c.fs.Int("limit", 20, "how many jobs, most recent first")
	asJSON := c.fs.Bool("json", false, "print a JSON array")
	ctx := context.Background()
	if code := c.parse(ctx, args, cfg, false, stderr); code >= 0 {
		return code
	}
	defer c.close()
	list, err := c.store.Recent(ctx, *limit)
	if err != nil {
		cli.PrintError(stderr, "splitter", err)
		return cli.ExitError
	}
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(list); err != nil {
			return cli.ExitError
		}
		return cli.ExitOK
	}
	printJobs(stdout, list)
	return cli.ExitOK
}

// openStore connects to the database and brings the tool's tables up to date.
func openStore(ctx context.Context, url string, conns int32) (*jobs.Store, *pgxpool.Pool, error) {
	pool, err := dbpool.Open(ctx, url, conns, "bui splitter")
	if err != nil {
		return nil, nil, err
	}
	if err := jobs.Migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, nil, err
	}
	return jobs.NewStore(pool), pool, nil
}

// newLifecycle returns the lifecycle of the jobs on pool, writing result
// files to RESULTS_BUCKET: a command that ends a job completes it at once.
func newLifecycle(pool *pgxpool.Pool, store *jobs.Store, awsCfg aws.Config, cfg config.Config, log *slog.Logger) *lifecycle.Lifecycle {
	return lifecycle.New(pool, &results.Publisher{Jobs: store, S3: awsconf.S3(awsCfg), Bucket: cfg.ResultsBucket}, log)
}

func needsS3(sources []string) bool {
	for _, s := range sources {
		if loc, err := source.Parse(s); err == nil && loc.IsS3() {
			return true
		}
	}
	return false
}

// newJobID returns a sortable, readable id: date, time and a random suffix.
func newJobID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b)
}
