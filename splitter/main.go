// Command splitter records the rows of one or more CSV files as an import
// job and sends one SQS message per row for the workers.
//
// Usage:
//
//	splitter [flags] SOURCE...     import (SOURCE: a path or s3://bucket/key)
//	splitter status JOB [--json]   counts of a job's rows by state
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/cli"
	"github.com/massgov/bulk-user-import/shared/config"
	"github.com/massgov/bulk-user-import/shared/dbpool"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/queue"
	"github.com/massgov/bulk-user-import/shared/source"
	"github.com/massgov/bulk-user-import/shared/split"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

const usage = `Usage:
  splitter [flags] SOURCE...     import the rows of the sources as one job
  splitter status JOB [--json]   show a job's rows by state

SOURCE is a local path or s3://bucket/key. Flags may come before or after
the sources. Import flags:
`

func run(args []string, getenv func(string) string, stdout io.Writer, stderr *os.File) int {
	cfg := config.FromEnv(getenv)
	if len(args) > 0 && args[0] == "status" {
		return runStatus(args[1:], cfg, stdout, stderr)
	}
	return runImport(args, cfg, stdout, stderr)
}

type importFlags struct {
	job, logFormat, logLevel string
	force, dryRun, wait      bool
	pollInterval             time.Duration
	sendConcurrency          int
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
	fs.BoolVar(&f.wait, "wait", false, "wait until every row is final and print the summary (exit 3 if any row failed or was rejected)")
	fs.DurationVar(&f.pollInterval, "poll-interval", 2*time.Second, "with --wait, how often to check the job")
	fs.IntVar(&f.sendConcurrency, "send-concurrency", 8, "SendMessageBatch calls in flight")
	fs.StringVar(&f.logFormat, "log-format", or(cfg.LogFormat, "auto"), "log format: json, text or auto (env LOG_FORMAT)")
	fs.StringVar(&f.logLevel, "log-level", or(cfg.LogLevel, "info"), "log level (env LOG_LEVEL)")
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
	if f.pollInterval <= 0 || f.sendConcurrency < 1 {
		fmt.Fprintln(stderr, "splitter: --poll-interval and --send-concurrency must be positive")
		return cli.ExitUsage
	}
	log, err := cli.Logger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "splitter:", err)
		return cli.ExitUsage
	}
	ctx, stop := cli.SignalContext(stderr)
	defer stop()

	if f.dryRun {
		opener := source.Opener{}
		if needsS3(sources) {
			awsCfg, err := awsconf.Load(ctx, cfg.Region)
			if err != nil {
				fmt.Fprintln(stderr, "splitter:", err)
				return cli.ExitError
			}
			opener.S3 = awsconf.S3(awsCfg)
		}
		res, err := split.DryRun(ctx, opener, sources, 50)
		if err != nil {
			fmt.Fprintln(stderr, "splitter:", err)
			return cli.ExitError
		}
		printDryRun(stdout, res)
		if len(split.Refused(res.Sources)) > 0 {
			return cli.ExitError
		}
		return cli.ExitOK
	}

	if err := cfg.Require(config.Database, config.Queue); err != nil {
		fmt.Fprintln(stderr, "splitter:", err)
		return cli.ExitUsage
	}
	if f.job == "" {
		f.job = newJobID()
	}
	store, closeDB, err := openStore(ctx, cfg.DatabaseURL, int32(4+f.sendConcurrency))
	if err != nil {
		fmt.Fprintln(stderr, "splitter:", err)
		return cli.ExitError
	}
	defer closeDB()
	awsCfg, err := awsconf.Load(ctx, cfg.Region)
	if err != nil {
		fmt.Fprintln(stderr, "splitter:", err)
		return cli.ExitError
	}
	sp := &split.Splitter{
		Jobs:            store,
		Queue:           queue.New(awsconf.SQS(awsCfg), cfg.QueueURL),
		Opener:          source.Opener{S3: awsconf.S3(awsCfg)},
		Log:             log,
		SendConcurrency: f.sendConcurrency,
	}
	fmt.Fprintf(stdout, "job %s\n", f.job)
	res, err := sp.Run(ctx, split.Options{Job: f.job, ForceRegistration: f.force, Sources: sources})
	printRun(stdout, res)
	if err != nil {
		fmt.Fprintln(stderr, "splitter:", err)
		return cli.ExitError
	}
	code := cli.ExitOK
	if len(res.Refused()) > 0 {
		code = cli.ExitError
	}
	if !f.wait {
		return code
	}
	fmt.Fprintf(stdout, "waiting for the workers (Ctrl-C stops waiting, not the job; see: splitter status %s)\n", f.job)
	last := jobs.Status{}
	st, err := split.Wait(ctx, store, f.job, f.pollInterval, func(st jobs.Status) {
		if st != last {
			printProgress(stdout, st)
			last = st
		}
	})
	if err != nil {
		fmt.Fprintln(stderr, "splitter:", err)
		return cli.ExitError
	}
	probs, err := store.Problems(context.WithoutCancel(ctx), f.job, 50)
	if err != nil {
		fmt.Fprintln(stderr, "splitter:", err)
		return cli.ExitError
	}
	printSummary(stdout, st, probs)
	if code == cli.ExitOK && st.Failed+st.Rejected > 0 {
		code = cli.ExitProblems
	}
	return code
}

func runStatus(args []string, cfg config.Config, stdout io.Writer, stderr *os.File) int {
	fs := flag.NewFlagSet("splitter status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print one JSON object")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: splitter status JOB [--json]")
		fs.PrintDefaults()
	}
	pos, err := cli.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return cli.ExitOK
	}
	if err != nil {
		return cli.ExitUsage
	}
	if len(pos) != 1 {
		fs.Usage()
		return cli.ExitUsage
	}
	if err := cfg.Require(config.Database); err != nil {
		fmt.Fprintln(stderr, "splitter:", err)
		return cli.ExitUsage
	}
	ctx := context.Background()
	store, closeDB, err := openStore(ctx, cfg.DatabaseURL, 2)
	if err != nil {
		fmt.Fprintln(stderr, "splitter:", err)
		return cli.ExitError
	}
	defer closeDB()
	st, err := store.Status(ctx, pos[0])
	if err != nil {
		fmt.Fprintln(stderr, "splitter:", err)
		return cli.ExitError
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		if err := enc.Encode(st); err != nil {
			return cli.ExitError
		}
		return cli.ExitOK
	}
	printStatus(stdout, st)
	return cli.ExitOK
}

// openStore connects to the database and brings the tool's tables up to date.
func openStore(ctx context.Context, url string, conns int32) (*jobs.Store, func(), error) {
	pool, err := dbpool.Open(ctx, url, conns)
	if err != nil {
		return nil, nil, err
	}
	if err := jobs.Migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, nil, err
	}
	return jobs.NewStore(pool), pool.Close, nil
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

func or(v, def string) string {
	if v != "" {
		return v
	}
	return def
}
