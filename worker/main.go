// Command worker consumes the import queue: for each message it registers
// one (email, FEIN) pair in Cognito, the PFML database and, with force
// registration, FINEOS; failed rows go to the dead-letter queue.
//
// Usage: worker [flags]   (runs until SIGINT or SIGTERM)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/cli"
	"github.com/massgov/bulk-user-import/shared/cognito"
	"github.com/massgov/bulk-user-import/shared/config"
	"github.com/massgov/bulk-user-import/shared/consume"
	"github.com/massgov/bulk-user-import/shared/dbpool"
	"github.com/massgov/bulk-user-import/shared/fineos"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/pfml"
	"github.com/massgov/bulk-user-import/shared/queue"
	"github.com/massgov/bulk-user-import/shared/register"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

type flags struct {
	loop            consume.Config
	backoff         consume.Backoff
	maxReceiveCount int
	logFormat       string
	logLevel        string
}

func parseFlags(args []string, cfg config.Config, stderr io.Writer) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: worker [flags]\n\nConsumes IMPORT_QUEUE_URL until SIGINT or SIGTERM. Flags:")
		fs.PrintDefaults()
	}
	fs.IntVar(&f.loop.Concurrency, "concurrency", 16, "messages handled at once")
	fs.DurationVar(&f.loop.WaitTime, "wait-time", 20*time.Second, "long-poll wait of each receive (at most 20s)")
	fs.DurationVar(&f.loop.VisibilityTimeout, "visibility-timeout", 2*time.Minute, "how long a received message stays hidden from other workers")
	fs.DurationVar(&f.loop.MessageTimeout, "message-timeout", 90*time.Second, "time allowed per message (below the visibility timeout)")
	fs.DurationVar(&f.loop.ShutdownTimeout, "shutdown-timeout", 20*time.Second, "on SIGTERM, time in-flight messages get to finish")
	fs.DurationVar(&f.backoff.Base, "retry-base", 10*time.Second, "delay before the first retry of a transient failure (doubles each attempt)")
	fs.DurationVar(&f.backoff.Max, "retry-max", 5*time.Minute, "longest delay between retries")
	fs.IntVar(&f.maxReceiveCount, "max-receive-count", 0, "attempts before a row fails (default: the queue's RedrivePolicy maxReceiveCount)")
	fs.StringVar(&f.logFormat, "log-format", or(cfg.LogFormat, "json"), "log format: json, text or auto (env LOG_FORMAT)")
	fs.StringVar(&f.logLevel, "log-level", or(cfg.LogLevel, "info"), "log level: debug, info, warn, error (env LOG_LEVEL)")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return f, err
	}
	if len(pos) > 0 {
		fs.Usage()
		return f, fmt.Errorf("unexpected argument %q", pos[0])
	}
	if f.maxReceiveCount < 0 {
		return f, fmt.Errorf("--max-receive-count %d: want 0 (the queue's) or more", f.maxReceiveCount)
	}
	return f, errors.Join(f.loop.Validate(), f.backoff.Validate())
}

func run(args []string, getenv func(string) string, stderr *os.File) int {
	cfg := config.FromEnv(getenv)
	f, err := parseFlags(args, cfg, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return cli.ExitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "worker:", err)
		return cli.ExitUsage
	}
	log, err := cli.Logger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "worker:", err)
		return cli.ExitUsage
	}
	if err := cfg.Require(config.Database, config.Queue, config.DLQ, config.Cognito); err != nil {
		log.Error("cannot start", "err", err)
		return cli.ExitUsage
	}
	ctx, stop := cli.SignalContext(stderr)
	defer stop()
	if err := work(ctx, cfg, f, log); err != nil {
		log.Error("worker failed", "err", err)
		return cli.ExitError
	}
	return cli.ExitOK
}

// work wires the adapters and runs the loop until ctx is cancelled.
func work(ctx context.Context, cfg config.Config, f flags, log *slog.Logger) error {
	pool, err := dbpool.Open(ctx, cfg.DatabaseURL, int32(f.loop.Concurrency+4))
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := jobs.Migrate(ctx, pool); err != nil {
		return err
	}
	store, err := pfml.NewStore(ctx, pool)
	if err != nil {
		return err
	}
	awsCfg, err := awsconf.Load(ctx, cfg.Region)
	if err != nil {
		return err
	}
	sqsClient := awsconf.SQS(awsCfg)
	importQueue := queue.New(sqsClient, cfg.QueueURL)
	maxReceive := f.maxReceiveCount
	if maxReceive == 0 {
		p, err := importQueue.Redrive(ctx)
		if err != nil {
			return fmt.Errorf("read the import queue's redrive policy (or pass --max-receive-count): %w", err)
		}
		maxReceive = p.MaxReceiveCount
	}
	var fc register.FineosAPI
	if cfg.Fineos.Enabled() {
		c, err := fineos.New(cfg.Fineos, nil)
		if err != nil {
			return err
		}
		fc = c
	} else {
		log.Warn("FINEOS is not configured: rows of force-registration jobs will fail with " + register.CodeFineosNotConfigured)
	}
	w := &consume.Worker{
		Queue:  importQueue,
		Config: f.loop,
		Log:    log,
		Handler: &consume.Handler{
			Jobs: jobs.NewStore(pool),
			Registrar: &register.Registrar{
				PFML:    store,
				Cognito: cognito.New(awsconf.Cognito(awsCfg), cfg.UserPoolID),
				Fineos:  fc,
				Log:     log,
			},
			DLQ:             queue.New(sqsClient, cfg.DLQURL),
			MaxReceiveCount: maxReceive,
			Backoff:         f.backoff,
			Log:             log,
		},
	}
	log.Info("worker started", "concurrency", f.loop.Concurrency, "max_receive_count", maxReceive,
		"visibility_timeout", f.loop.VisibilityTimeout.String(), "fineos", cfg.Fineos.Enabled())
	return w.Run(ctx)
}

func or(v, def string) string {
	if v != "" {
		return v
	}
	return def
}
