package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"text/tabwriter"
	"time"

	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/cli"
	"github.com/massgov/bulk-user-import/shared/config"
	"github.com/massgov/bulk-user-import/shared/dbpool"
	"github.com/massgov/bulk-user-import/shared/dlq"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/mask"
	"github.com/massgov/bulk-user-import/shared/queue"
	"github.com/massgov/bulk-user-import/shared/results"
	"github.com/massgov/bulk-user-import/shared/textbound"
)

const dlqUsage = `Usage:
  worker dlq list   [--job ID] [--error CODE] [--samples N] [--json]
  worker dlq replay [--job ID] [--error CODE] [--limit N] [--rate PER_SECOND] [--dry-run] [--json]
  worker dlq purge  --job ID [--yes] [--json]

list shows the dead-letter queue's messages by error code and consumes
nothing. replay moves matching messages back to the import queue (their
rows return to queued). purge deletes a job's messages for good and marks
their rows failed for good; without --yes it only shows what it would do.
`

// runDLQ runs "worker dlq ...".
func runDLQ(args []string, cfg config.Config, stdout io.Writer, stderr *os.File) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, dlqUsage)
		return cli.ExitUsage
	}
	cmd := args[0]
	fs := flag.NewFlagSet("worker dlq "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, dlqUsage, "\nFlags:\n"); fs.PrintDefaults() }
	var f dlq.ReplayOptions
	fs.StringVar(&f.Job, "job", "", "only messages of this job")
	fs.StringVar(&f.Code, "error", "", "only messages with this error_code (REDRIVEN: moved by SQS without one)")
	samples := fs.Int("samples", 3, "list: example messages per error code")
	fs.IntVar(&f.Limit, "limit", 0, "replay: move at most this many messages (0: all)")
	fs.Float64Var(&f.Rate, "rate", 0, "replay: move at most this many messages per second (0: no limit)")
	fs.BoolVar(&f.DryRun, "dry-run", false, "replay: show what would move; move nothing")
	yes := fs.Bool("yes", false, "purge: really delete")
	asJSON := fs.Bool("json", false, "print one JSON object")
	hold := fs.Duration("hold", time.Minute, "visibility of the messages a pass holds (extended while it runs)")
	logFormat := fs.String("log-format", cmp.Or(cfg.LogFormat, "auto"), "log format: json, text or auto")
	pos, err := cli.Parse(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return cli.ExitOK
	}
	if err != nil {
		return cli.ExitUsage
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "worker dlq %s: unexpected argument %q\n", cmd, pos[0])
		return cli.ExitUsage
	}
	log, err := cli.Logger(stderr, *logFormat, cmp.Or(cfg.LogLevel, "info"))
	if err != nil {
		cli.PrintError(stderr, "worker", err)
		return cli.ExitUsage
	}
	needs := []config.Need{config.DLQ, config.Database}
	switch cmd {
	case "list":
	case "replay":
		needs = append(needs, config.Queue)
	case "purge":
		if f.Job == "" {
			fmt.Fprintln(stderr, "worker dlq purge: --job is required")
			return cli.ExitUsage
		}
	default:
		fmt.Fprint(stderr, dlqUsage)
		return cli.ExitUsage
	}
	if err := cfg.Require(needs...); err != nil {
		cli.PrintError(stderr, "worker", err)
		return cli.ExitUsage
	}
	ctx, stop := cli.SignalContext(log)
	defer stop()
	tool, finisher, closeAll, err := dlqTool(ctx, cfg, *hold, log)
	if err != nil {
		cli.PrintError(stderr, "worker", err)
		return cli.ExitError
	}
	defer closeAll()

	var out any
	code := cli.ExitOK
	switch cmd {
	case "list":
		l, err := tool.List(ctx, f.Filter, *samples)
		if err != nil {
			cli.PrintError(stderr, "worker dlq list", err)
			return cli.ExitError
		}
		out = l
		if !*asJSON {
			printListing(stdout, cfg.DLQURL, l)
		}
	case "replay":
		r, err := tool.Replay(ctx, f)
		if err != nil {
			cli.PrintError(stderr, "worker dlq replay", err)
			code = cli.ExitError
		}
		if r.Errors > 0 {
			code = cli.ExitError
		}
		out = r
		if !*asJSON {
			printReplay(stdout, f, r)
		}
	case "purge":
		r, err := tool.Purge(ctx, f.Job, *yes)
		if err != nil {
			cli.PrintError(stderr, "worker dlq purge", err)
			return cli.ExitError
		}
		if *yes {
			finisher.Finish(context.WithoutCancel(ctx), f.Job)
		} else if r.Deleted > 0 {
			code = cli.ExitUsage
		}
		out = r
		if !*asJSON {
			printPurge(stdout, f.Job, *yes, r)
		}
	}
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(out); err != nil {
			return cli.ExitError
		}
	}
	return code
}

func dlqTool(ctx context.Context, cfg config.Config, hold time.Duration, log *slog.Logger) (*dlq.Tool, *lifecycle.Lifecycle, func(), error) {
	pool, err := dbpool.Open(ctx, cfg.DatabaseURL, 4, "bui worker dlq")
	if err != nil {
		return nil, nil, nil, err
	}
	if err := jobs.Migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, nil, nil, err
	}
	awsCfg, err := awsconf.Load(ctx, cfg.Region)
	if err != nil {
		pool.Close()
		return nil, nil, nil, err
	}
	sqsClient := awsconf.SQS(awsCfg)
	store := jobs.NewStore(pool)
	lc := lifecycle.New(pool, &results.Publisher{Jobs: store, S3: awsconf.S3(awsCfg), Bucket: cfg.ResultsBucket}, log)
	tool := &dlq.Tool{DLQ: queue.New(sqsClient, cfg.DLQURL), Rows: lc, Log: log, Hold: hold}
	if cfg.QueueURL != "" {
		tool.Main = queue.New(sqsClient, cfg.QueueURL)
	}
	return tool, lc, pool.Close, nil
}

func printListing(w io.Writer, url string, l dlq.Listing) {
	fmt.Fprintf(w, "dead-letter queue %s: %d messages looked at, %d matching (%d rows)\n", url, l.Seen, l.Matching, l.Rows)
	if l.Partial {
		fmt.Fprintln(w, "(partial: the pass stopped before the end of the queue)")
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, g := range l.Groups {
		fmt.Fprintf(tw, "%s\t%d\t\n", g.Code, g.Count)
		for _, e := range g.Samples {
			fmt.Fprintf(tw, "  job %s row %d\t%s %s\tattempts %s\t%s\t%s\n", e.Job, e.Row, e.Email, e.FEIN, e.Attempts, e.FailedAt, textbound.OneLine(mask.Text(e.Error), 160))
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "(the messages looked at are visible again)")
}

func printReplay(w io.Writer, o dlq.ReplayOptions, r dlq.ReplayResult) {
	verb := "moved"
	if o.DryRun {
		verb = "would move (dry run: nothing moved)"
	}
	fmt.Fprintf(w, "replay: %d %s, %d skipped, %d errors (%d messages looked at)\n", r.Moved, verb, r.Skipped, r.Errors, r.Seen)
	if r.Later > 0 {
		fmt.Fprintf(w, "  %d dead-lettered after the pass began (rows that failed again among them): left for the next replay\n", r.Later)
	}
	if r.Duplicates > 0 {
		fmt.Fprintf(w, "  %d extra copies of moved rows' dead letters deleted\n", r.Duplicates)
	}
	for code, n := range r.ByCode {
		fmt.Fprintf(w, "  %s: %d\n", code, n)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	if r.Partial {
		fmt.Fprintln(w, "  (partial: stopped at --limit or at the pass's bound; run again for the rest)")
	}
}

func printPurge(w io.Writer, job string, yes bool, r dlq.PurgeResult) {
	if !yes {
		fmt.Fprintf(w, "purge job %s: %d messages would be deleted for good and their rows marked failed for good; add --yes to do it\n", job, r.Deleted)
	} else {
		fmt.Fprintf(w, "purge job %s: %d messages deleted, %d rows marked failed for good\n", job, r.Deleted, r.RowsFailed)
	}
	for code, n := range r.ByCode {
		fmt.Fprintf(w, "  %s: %d\n", code, n)
	}
}
