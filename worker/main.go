// Command worker consumes the import queue: for each message it registers
// one (email, FEIN) pair in Cognito, the PFML database and, with force
// registration, FINEOS; failed rows go to the dead-letter queue.
//
// Usage: worker [flags]   (runs until SIGINT or SIGTERM)
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/breaker"
	"github.com/massgov/bulk-user-import/shared/budget"
	"github.com/massgov/bulk-user-import/shared/cli"
	"github.com/massgov/bulk-user-import/shared/cognito"
	"github.com/massgov/bulk-user-import/shared/config"
	"github.com/massgov/bulk-user-import/shared/consume"
	"github.com/massgov/bulk-user-import/shared/dbpool"
	"github.com/massgov/bulk-user-import/shared/ecsprotect"
	"github.com/massgov/bulk-user-import/shared/enqueue"
	"github.com/massgov/bulk-user-import/shared/events"
	"github.com/massgov/bulk-user-import/shared/fineos"
	"github.com/massgov/bulk-user-import/shared/fleet"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/maintain"
	"github.com/massgov/bulk-user-import/shared/metrics"
	"github.com/massgov/bulk-user-import/shared/pfml"
	"github.com/massgov/bulk-user-import/shared/queue"
	"github.com/massgov/bulk-user-import/shared/register"
	"github.com/massgov/bulk-user-import/shared/results"
	"github.com/massgov/bulk-user-import/shared/retry"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

type flags struct {
	loop             consume.Config
	backoff          consume.Backoff
	callRetry        retry.Policy
	pacing           pacingFlags
	maxReceiveCount  int
	dbConnectTimeout time.Duration
	dbMaxConns       int
	conns            dbpool.WorkerConns // dbMaxConns, split
	metricsAddr      string
	emf              bool
	maintain         maintain.Config
	resultsLease     time.Duration
	eventLease       time.Duration
	snsTopic         string
	eventBus         string
	probeMax         time.Duration
	logFormat        string
	logLevel         string
}

func parseFlags(args []string, cfg config.Config, stderr io.Writer) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: worker [flags]\n       worker dlq list|replay|purge ... (worker dlq -h)\n\nConsumes IMPORT_QUEUE_URL until SIGINT or SIGTERM. Flags:")
		fs.PrintDefaults()
	}
	fs.IntVar(&f.loop.Concurrency, "concurrency", 16, "messages handled at once")
	fs.DurationVar(&f.loop.WaitTime, "wait-time", 20*time.Second, "long-poll wait of each receive (at most 20s)")
	fs.DurationVar(&f.loop.VisibilityTimeout, "visibility-timeout", consume.DefaultVisibilityTimeout, "how long a received message stays hidden; extended while it is handled")
	fs.DurationVar(&f.loop.HeartbeatInterval, "heartbeat-interval", 0, "how often the visibility of messages in flight is extended (default: a third of --visibility-timeout)")
	fs.DurationVar(&f.loop.MessageTimeout, "message-timeout", 5*time.Minute, "total time allowed per message, retries within the attempt included")
	fs.DurationVar(&f.loop.ShutdownTimeout, "shutdown-timeout", consume.DefaultShutdownTimeout, "on SIGTERM, time in-flight messages get to finish (keep it below the ECS stop timeout)")
	fs.DurationVar(&f.loop.SummaryInterval, "summary-interval", 30*time.Second, "how often the summary line (and EMF metrics) is written")
	fs.DurationVar(&f.backoff.Base, "retry-base", 10*time.Second, "delay before the next attempt after a transient failure (doubles each attempt)")
	fs.DurationVar(&f.backoff.Max, "retry-max", 5*time.Minute, "longest delay between attempts")
	fs.DurationVar(&f.callRetry.Initial, "call-retry-initial", retry.DefaultPolicy.Initial, "within an attempt, first wait before retrying a failed call")
	fs.DurationVar(&f.callRetry.Max, "call-retry-max", retry.DefaultPolicy.Max, "within an attempt, longest wait between retries of a call")
	fs.DurationVar(&f.callRetry.MaxElapsed, "call-retry-time", retry.DefaultPolicy.MaxElapsed, "within an attempt, how long one call is retried (negative: not at all)")
	envErr := f.pacing.define(fs, cfg)
	fs.IntVar(&f.maxReceiveCount, "max-receive-count", 0, "attempts before a row fails (default: the queue's RedrivePolicy maxReceiveCount)")
	fs.DurationVar(&f.dbConnectTimeout, "db-connect-timeout", time.Minute, "at start, how long to keep trying to reach the database")
	fs.IntVar(&f.dbMaxConns, "db-max-conns", dbpool.DefaultWorkerConns, fmt.Sprintf("most database connections this worker opens, whatever --concurrency: %d for the maintainer and the fleet's bookkeeping, 1 listening for the fleet's budget changes (with a budget), the rest for the rows; keep workers x this below the server's max_connections", dbpool.ControlConns))
	fs.DurationVar(&f.maintain.Interval, "maintain-interval", maintain.DefaultInterval, "how often the elected maintainer completes jobs, writes result files, re-sends lost messages and applies retention")
	fs.DurationVar(&f.maintain.Lease, "leader-lease", maintain.DefaultLease, "the maintainer leader's lease: a leader that died is replaced within it (plus a third)")
	fs.DurationVar(&f.resultsLease, "results-lease", lifecycle.DefaultClaimLease, "a claim on a job's result files holds this long unrenewed (its writer renews it every third of it): a writer that died or stalled is taken over after it, and stops writing once it runs out")
	fs.DurationVar(&f.eventLease, "event-lease", lifecycle.DefaultEventLease, "a claim on a job's completion event holds this long: an announcer that died or stalled is taken over after it (a publish gets half of it)")
	fs.StringVar(&f.snsTopic, "completion-sns-topic", cfg.CompletionSNSTopic, "publish each job's completion event to this SNS topic ARN (env COMPLETION_SNS_TOPIC_ARN; empty: none)")
	fs.StringVar(&f.eventBus, "completion-event-bus", cfg.CompletionEventBus, "publish each job's completion event to this EventBridge bus, name or ARN (env COMPLETION_EVENT_BUS; empty: none)")
	fs.DurationVar(&f.maintain.RecoverAfter, "recover-after", 0, "re-send a queued row's message once the row and the import queue have been idle this long (default: 2 x --message-timeout + the longer of --visibility-timeout and --retry-max + 1m20s)")
	cli.DurationVar(fs, &f.maintain.Retention, "retention", maintain.DefaultRetention, "delete the row data of jobs finished longer ago than this, keeping their counts (0: keep everything; e.g. 30d, 72h)")
	fs.DurationVar(&f.probeMax, "breaker-probe-max", breaker.DefaultProbeMax, "while a dependency refuses the pipeline, the longest wait between two probes of it (they start 2s apart and double)")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics (e.g. :9090; empty: off)")
	fs.BoolVar(&f.emf, "emf", false, "write CloudWatch embedded-metric-format lines to stdout every --summary-interval")
	fs.StringVar(&f.logFormat, "log-format", cmp.Or(cfg.LogFormat, "json"), "log format: json, text or auto (env LOG_FORMAT)")
	fs.StringVar(&f.logLevel, "log-level", cmp.Or(cfg.LogLevel, "info"), "log level: debug, info, warn, error (env LOG_LEVEL)")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return f, err
	}
	if len(pos) > 0 {
		fs.Usage()
		return f, fmt.Errorf("unexpected argument %q", pos[0])
	}
	errs := []error{envErr, f.pacing.resolve(fs)}
	if f.maxReceiveCount < 0 {
		errs = append(errs, fmt.Errorf("--max-receive-count %d: want 0 (the queue's) or more", f.maxReceiveCount))
	}
	if f.dbMaxConns < 0 || f.dbMaxConns > math.MaxInt32/2 {
		errs = append(errs, fmt.Errorf("--db-max-conns %d: want 0 (the default, %d) or more", f.dbMaxConns, dbpool.DefaultWorkerConns))
	} else {
		var err error
		f.conns, err = dbpool.SplitWorkerConns(f.dbMaxConns, f.pacing.budgeted(), "--db-max-conns")
		errs = append(errs, err)
	}
	if f.emf && f.loop.SummaryInterval <= 0 {
		errs = append(errs, errors.New("--emf needs a positive --summary-interval"))
	}
	if f.probeMax < breaker.DefaultProbeInitial || f.probeMax > time.Hour {
		errs = append(errs, fmt.Errorf("--breaker-probe-max %s: want %s to 1h", f.probeMax, breaker.DefaultProbeInitial))
	}
	if f.resultsLease <= 0 {
		errs = append(errs, fmt.Errorf("--results-lease %s: want more than 0", f.resultsLease))
	}
	if f.eventLease < time.Second || f.eventLease > time.Hour {
		errs = append(errs, fmt.Errorf("--event-lease %s: want 1s to 1h", f.eventLease))
	}
	if f.snsTopic != "" && !strings.HasPrefix(f.snsTopic, "arn:") {
		errs = append(errs, fmt.Errorf("--completion-sns-topic %q: want a topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)", f.snsTopic))
	}
	if f.maintain.RecoverAfter < 0 {
		errs = append(errs, fmt.Errorf("--recover-after %s: want 0 (derived) or more", f.maintain.RecoverAfter))
	}
	if f.maintain.RecoverAfter == 0 {
		f.maintain.RecoverAfter = consume.SilenceBound(f.loop, f.backoff)
	}
	return f, errors.Join(append(errs, f.loop.Validate(), f.backoff.Validate(), f.maintain.Validate())...)
}

func run(args []string, getenv func(string) string, stdout io.Writer, stderr *os.File) int {
	cfg := config.FromEnv(getenv)
	if len(args) > 0 && args[0] == "dlq" {
		return runDLQ(args[1:], cfg, stdout, stderr)
	}
	f, err := parseFlags(args, cfg, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return cli.ExitOK
	}
	if err != nil {
		cli.PrintError(stderr, "worker", err)
		return cli.ExitUsage
	}
	log, err := cli.Logger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		cli.PrintError(stderr, "worker", err)
		return cli.ExitUsage
	}
	if err := cfg.Require(config.Database, config.Queue, config.DLQ, config.Cognito); err != nil {
		log.Error("cannot start", "err", err)
		return cli.ExitUsage
	}
	ctx, stop := cli.SignalContext(log)
	defer stop()
	if err := work(ctx, cfg, f, log, stdout, getenv); err != nil {
		if ctx.Err() != nil && retry.IsContextError(err) {
			log.Info("stopped while starting", "err", err)
			return cli.ExitOK // a stop during start-up is a stop, not a failure
		}
		log.Error("worker failed", "err", err)
		return cli.ExitError
	}
	return cli.ExitOK
}

// work wires the adapters and runs the loop until ctx is cancelled: each
// step below starts one part and says how to stop it; they stop in the
// reverse order.
func work(ctx context.Context, cfg config.Config, f flags, log *slog.Logger, stdout io.Writer, getenv func(string) string) error {
	id := fleet.NewID()
	db, err := openDatabase(ctx, cfg, f, id, log)
	if err != nil {
		return err
	}
	defer db.close()
	awsCfg, err := awsconf.Load(ctx, cfg.Region)
	if err != nil {
		return err
	}
	sqsClient := awsconf.SQS(awsCfg)
	importQueue := queue.New(sqsClient, cfg.QueueURL)
	st, err := startupChecks(ctx, db, importQueue, queue.New(sqsClient, cfg.DLQURL), f, log)
	if err != nil {
		return err
	}
	deps, err := dependencies(ctx, awsCfg, cfg, f, log)
	if err != nil {
		return err
	}
	defer deps.close()

	m := &metrics.Worker{}
	bf := newBudgets(db.control, id, f, deps.limits, m, log)
	if bf != nil {
		bf.ListenName = dbpool.AppName("bui worker listen " + id)
	}
	breakers, stopBreakers := startBreakers(ctx, db.control, id, st.pfml, deps.cognito, deps.fineos, f.probeMax, m, log,
		func() dbpool.Usage { return dbpool.UsageOf(f.conns, db.rows, db.control, bf.Listening()) })
	defer stopBreakers()
	defer runBudgets(ctx, bf)()
	stopObserving, err := startObserving(f, m, stdout, log)
	if err != nil {
		return err
	}
	defer stopObserving()

	if cfg.ResultsBucket == "" {
		log.Warn("no results bucket configured (RESULTS_BUCKET): result files of completed jobs are not written to S3")
	}
	// The maintainer's transitions on the control pool, the rows' on theirs.
	lc := lifecycle.New(db.control, &results.Publisher{Jobs: jobs.NewStore(db.control), S3: awsconf.S3(awsCfg), Bucket: cfg.ResultsBucket}, log)
	lc.RetryBase = f.maintain.Interval
	lc.ClaimLease = f.resultsLease
	lc.EventLease = f.eventLease
	lc.Events = completionEvents(awsCfg, f, log)
	rows := lifecycle.New(db.rows, nil, log)
	mc := f.maintain
	mc.MaxReceiveCount, mc.DLQRetention = st.maxReceive, st.dlqRetention
	defer startMaintainer(ctx, db.control, id, mc, lc, importQueue, m, log)()

	loop := f.loop
	loop.MaxReceiveCount = st.maxReceive
	w := &consume.Worker{
		Queue:    importQueue,
		Config:   loop,
		Log:      log,
		Metrics:  m,
		Breakers: breakers,
		Handler: &consume.Handler{
			Rows:     rows,
			Breakers: breakers,
			Registrar: &register.Registrar{
				PFML:    st.pfml,
				Rows:    rows,
				Cognito: deps.cognito,
				Fineos:  deps.fineosAPI(),
				Log:     log,
				Retry:   f.callRetry,
				Observe: m.Step,
			},
			DLQ:             queue.New(sqsClient, cfg.DLQURL),
			MaxReceiveCount: st.maxReceive,
			Backoff:         f.backoff,
			Log:             log,
			Metrics:         m,
			TouchEvery:      mc.RecoverAfter / 4,
		},
	}
	defer protectOnECS(ctx, getenv, m, log)()
	for _, w := range f.pacing.warnings() {
		log.Warn(w)
	}
	log.Info("worker started", "concurrency", loop.Concurrency, "db_max_conns", f.conns.Total(), "db_row_conns", f.conns.Rows, "max_receive_count", st.maxReceive,
		"visibility_timeout", loop.VisibilityTimeout.String(), "message_timeout", loop.MessageTimeout.String(),
		"limits", f.pacing.describe(), "fineos", cfg.Fineos.Enabled(),
		"worker_id", id, "maintain_interval", mc.Interval.String(), "recover_after", mc.RecoverAfter.String(), "retention", retentionText(mc.Retention),
		"dlq_retention", mc.DLQRetention.String())
	return w.Run(ctx)
}

// completionEvents is where the maintainer publishes completion events,
// nil when the flags name no destination (events are then skipped).
func completionEvents(awsCfg aws.Config, f flags, log *slog.Logger) events.Publisher {
	var p events.Multi
	if f.snsTopic != "" {
		p = append(p, &events.SNS{API: awsconf.SNS(awsCfg), Topic: f.snsTopic})
	}
	if f.eventBus != "" {
		p = append(p, &events.EventBridge{API: awsconf.EventBridge(awsCfg), Bus: f.eventBus})
	}
	if len(p) == 0 {
		log.Info("no completion event destination (--completion-sns-topic, --completion-event-bus): completion events are recorded as skipped")
		return nil
	}
	return p
}

// databases are the worker's pools: a few connections for the rows
// however many are in flight (each holds one only for its two short
// transactions), and the control pool of the maintainer and the fleet's
// bookkeeping, which the rows never starve (dbpool.WorkerConns).
type databases struct {
	rows, control *pgxpool.Pool
}

func (d databases) close() { d.rows.Close(); d.control.Close() }

// openDatabase connects (waiting for a database that restarts) and warns
// about what the server's settings mean for this worker.
func openDatabase(ctx context.Context, cfg config.Config, f flags, id string, log *slog.Logger) (databases, error) {
	var db databases
	var err error
	// application_name tells the worker's sessions apart in pg_stat_activity.
	if db.control, err = connect(ctx, cfg.DatabaseURL, f.conns.Control, "bui worker control "+id, f.dbConnectTimeout, log); err != nil {
		return db, err
	}
	if db.rows, err = connect(ctx, cfg.DatabaseURL, f.conns.Rows, "bui worker rows "+id, f.dbConnectTimeout, log); err != nil {
		db.control.Close()
		return db, err
	}
	dbpool.WarnParameterLogging(ctx, db.control, log)
	if h, err := dbpool.CheckHeadroom(ctx, db.control, db.rows); err != nil {
		log.Warn("cannot read the database's connection limit", "err", err)
	} else if !h.Fits(f.conns.Total()) {
		log.Warn("this worker may open more database connections than the server has free: lower --db-max-conns (workers x --db-max-conns must stay below max_connections)",
			"db_max_conns", f.conns.Total(), "server_max_connections", h.MaxConnections, "server_connections_in_use", h.InUse, "server_reserved", h.Reserved)
	}
	return db, nil
}

// started is what the start-up checks found.
type started struct {
	pfml         *pfml.Store
	maxReceive   int           // the import queue's maxReceiveCount (or --max-receive-count)
	dlqRetention time.Duration // how long SQS keeps a message it moved to the dead-letter queue
}

// startupChecks migrates the tool's tables and checks the PFML schema and
// the import queue's redrive policy, retried while their errors may pass
// (a database restarting, a throttled call); wrong configuration stops at
// once.
func startupChecks(ctx context.Context, db databases, importQueue, dlqQueue *queue.Queue, f flags, log *slog.Logger) (started, error) {
	st := started{maxReceive: f.maxReceiveCount}
	err := retry.Do(ctx, retry.Policy{Initial: 500 * time.Millisecond, Max: 5 * time.Second, MaxElapsed: f.dbConnectTimeout, Margin: time.Millisecond},
		startupTransient,
		func() error {
			if err := jobs.Migrate(ctx, db.control); err != nil {
				return err
			}
			var err error
			if st.pfml, err = pfml.NewStore(ctx, db.rows); err != nil {
				return err
			}
			if f.maxReceiveCount == 0 {
				p, err := importQueue.Redrive(ctx)
				if err != nil {
					return fmt.Errorf("read the import queue's redrive policy (or pass --max-receive-count): %w", err)
				}
				st.maxReceive = p.MaxReceiveCount
			}
			return nil
		},
		func(err error, wait time.Duration) {
			log.Warn("start-up check failed; retrying", "err", err, "retry_in", wait.Round(time.Millisecond).String())
		})
	if err != nil {
		return st, err
	}
	// The maintainer re-sends a row whose message SQS moved to the
	// dead-letter queue only after that.
	var rerr error
	if st.dlqRetention, rerr = dlqQueue.Retention(ctx); rerr != nil {
		log.Warn("cannot read the dead-letter queue's retention; assuming SQS's longest, 14 days", "err", rerr)
		st.dlqRetention = maintain.DefaultDLQRetention
	}
	return st, nil
}

// deps are the clients of the registration's services and their pacing.
type deps struct {
	cognito *cognito.Client
	fineos  *fineos.Client // nil when FINEOS is not configured
	limits  []*budget.Limit
	close   func()
}

// fineosAPI is the FINEOS client as the registrar takes it (a nil
// interface when there is none).
func (d deps) fineosAPI() register.FineosAPI {
	if d.fineos == nil {
		return nil
	}
	return d.fineos
}

// dependencies builds the Cognito and FINEOS clients with their limits and
// checks them before anything is received: a definite misconfiguration
// stops the worker, a dependency that is down is waited for.
func dependencies(ctx context.Context, awsCfg aws.Config, cfg config.Config, f flags, log *slog.Logger) (deps, error) {
	pacing, fineosLimit := f.pacing.limits()
	d := deps{cognito: cognito.New(awsconf.Cognito(awsCfg, pacing.Option()), cfg.UserPoolID)}
	made := fineosLimit // closed even when FINEOS is not configured
	d.close = func() { pacing.Close(); made.Close() }
	if cfg.Fineos.Enabled() {
		fc, err := fineos.New(cfg.Fineos, nil)
		if err != nil {
			d.close()
			return d, err
		}
		fc.SetLimit(fineosLimit)
		d.fineos = fc
	} else {
		fineosLimit = nil // no calls to pace or to share a budget for
		log.Warn("FINEOS is not configured: rows of force-registration jobs wait (" + register.CodeFineosNotConfigured + ") for a worker that has every FINEOS_CLIENT_* variable")
	}
	d.limits = append(pacing.Limits(), fineosLimit)
	if err := checkDependencies(ctx, d.cognito, d.fineos, cfg, f.dbConnectTimeout, log); err != nil {
		d.close()
		return d, err
	}
	return d, nil
}

// newBudgets is this worker's view of the fleet budgets (nil when no limit
// has one).
func newBudgets(pool *pgxpool.Pool, id string, f flags, limits []*budget.Limit, m *metrics.Worker, log *slog.Logger) *budget.Fleet {
	m.Budgets = func() []budget.State { return budgetStates(limits) }
	bf := budget.NewFleet(pool, id, f.pacing.sync, log, limits...)
	if bf != nil {
		m.BudgetSyncs = bf.Syncs
		// Idle (nothing in flight, nothing received for two syncs): its
		// share goes to the workers with work.
		bf.Watch(m.LastReceive, m.InFlight.Load)
	}
	return bf
}

// runBudgets shares the fleet budgets with the live workers from the
// first sync until the returned stop, called once the loop has drained
// (rows in flight at a stop still need their tokens); then this worker's
// share goes to the others.
func runBudgets(ctx context.Context, bf *budget.Fleet) func() {
	if bf == nil {
		return func() {}
	}
	fleetCtx, stopFleet := context.WithCancel(context.WithoutCancel(ctx))
	fleetDone := make(chan struct{})
	go func() { defer close(fleetDone); bf.Run(fleetCtx) }()
	return func() { stopFleet(); <-fleetDone }
}

// startObserving serves the Prometheus endpoint and writes EMF lines, as
// the flags ask.
func startObserving(f flags, m *metrics.Worker, stdout io.Writer, log *slog.Logger) (func(), error) {
	stop := func() {}
	if f.metricsAddr != "" {
		stopMetrics, err := serveMetrics(f.metricsAddr, m, log)
		if err != nil {
			return nil, err
		}
		stop = stopMetrics
	}
	if f.emf {
		stopEMF := writeEMF(m, f.loop.SummaryInterval, stdout, log)
		prev := stop
		stop = func() { stopEMF(); prev() }
	}
	return stop, nil
}

// startMaintainer runs this worker's maintainer: one leader among the
// workers completes jobs, writes their result files, re-sends lost
// messages and applies retention.
func startMaintainer(ctx context.Context, pool *pgxpool.Pool, id string, mc maintain.Config, lc *lifecycle.Lifecycle,
	importQueue *queue.Queue, m *metrics.Worker, log *slog.Logger) func() {
	store := jobs.NewStore(pool)
	maint := &maintain.Maintainer{
		Config:    mc,
		Elector:   maintain.NewElector(pool, maintain.LeaseName, id, mc.Lease, log),
		Lifecycle: lc,
		Jobs:      store,
		Queue:     importQueue,
		Enqueuer:  &enqueue.Enqueuer{Jobs: store, Book: lc, Queue: importQueue},
		Log:       log,
		Metrics:   m,
	}
	maintCtx, stopMaint := context.WithCancel(ctx)
	maintDone := make(chan error, 1)
	go func() { maintDone <- maint.Run(maintCtx) }()
	return func() {
		stopMaint()
		if err := <-maintDone; err != nil {
			log.Error("maintainer stopped", "err", err)
		}
	}
}

// protectOnECS keeps ECS from scaling the task in while messages are in
// flight (nothing off ECS).
func protectOnECS(ctx context.Context, getenv func(string) string, m *metrics.Worker, log *slog.Logger) func() {
	protector := ecsprotect.FromEnv(getenv, 30*time.Minute, log)
	if protector == nil {
		return func() {}
	}
	protectCtx, stopProtect := context.WithCancel(context.WithoutCancel(ctx))
	protectDone := make(chan struct{})
	go func() {
		defer close(protectDone)
		protector.Watch(protectCtx, 5*time.Second, func() bool { return m.InFlight.Load() > 0 })
	}()
	return func() { stopProtect(); <-protectDone }
}

// budgetStates are the limits' states (those that pace).
func budgetStates(limits []*budget.Limit) []budget.State {
	var out []budget.State
	for _, l := range limits {
		if l != nil {
			out = append(out, l.State())
		}
	}
	return out
}

// connect opens the database, trying again for up to timeout: a worker
// started while PostgreSQL restarts waits for it rather than exit.
func connect(ctx context.Context, url string, conns int32, app string, timeout time.Duration, log *slog.Logger) (*pgxpool.Pool, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var pool *pgxpool.Pool
	err := retry.Do(ctx, retry.Policy{Initial: 500 * time.Millisecond, Max: 5 * time.Second, MaxElapsed: timeout, Margin: time.Millisecond},
		func(err error) bool { return !retry.IsContextError(err) },
		func() (err error) {
			pool, err = dbpool.Open(ctx, url, conns, app)
			return err
		},
		func(err error, wait time.Duration) {
			log.Warn("database not reachable yet; retrying", "err", err, "retry_in", wait.Round(time.Millisecond).String())
		})
	return pool, err
}

// startupTransient tells start-up errors that may pass from wrong
// configuration: a missing queue or redrive policy, PFML tables without the
// expected columns, SQL errors of the migration.
func startupTransient(err error) bool {
	switch {
	case retry.IsContextError(err), queue.IsQueueMissing(err), errors.Is(err, queue.ErrNoRedrivePolicy), errors.Is(err, pfml.ErrSchema):
		return false
	}
	f := register.Classify(register.StepDatabase, err)
	// A read-only server (a failover) passes; missing privileges do not.
	return f.Code == register.CodeDatabaseReadOnly || f.Retryable()
}

// serveMetrics serves the Prometheus endpoint until the returned stop.
func serveMetrics(addr string, m *metrics.Worker, log *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return func() { _ = srv.Close() }, nil
}

// writeEMF writes CloudWatch embedded-metric-format lines every interval,
// and a last one at stop.
func writeEMF(m *metrics.Worker, interval time.Duration, w io.Writer, log *slog.Logger) func() {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(interval)
		defer t.Stop()
		prev := m.Snapshot(time.Now())
		for {
			stop := false
			select {
			case <-t.C:
			case <-done:
				stop = true
			}
			cur := m.Snapshot(time.Now())
			if err := metrics.WriteEMF(w, "worker", prev, cur); err != nil {
				log.Warn("could not write metrics", "err", err)
			}
			prev = cur
			if stop {
				return
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

func retentionText(d time.Duration) string {
	if d == 0 {
		return "keep everything"
	}
	return d.String()
}
