package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/massgov/bulk-user-import/localstack/bootstrap"
	"github.com/massgov/bulk-user-import/localstack/faultproxy"
	"github.com/massgov/bulk-user-import/localstack/fineosstub"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/cognito"
	"github.com/massgov/bulk-user-import/shared/dbpool"
	"github.com/massgov/bulk-user-import/shared/fineos"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/pfml"
	"github.com/massgov/bulk-user-import/shared/register"
)

const (
	employers     = 50
	firstFEIN     = 200000001
	firstFineosID = 7001
)

// workerResult is one measured run of the workers.
type workerResult struct {
	label       string
	workers     int
	concurrency int
	rows        int
	seconds     float64
	cost        cost
}

func (w workerResult) rate() float64 { return float64(w.rows) / w.seconds }

// cost is what the run spent, per row.
type cost struct {
	sends, receives, deletes, visibility float64 // SQS requests per row
	trips, transactions                  float64 // PostgreSQL per row
	cpuMillis                            float64 // worker CPU per row
	cognito, fineos                      float64 // calls per row
}

// prepareRows adds the employers the generated rows name (once) and the
// latencies in front of Cognito and FINEOS.
func prepareRows(ctx context.Context, e *env, o options) error {
	if !e.employers {
		for i := range employers {
			if _, err := e.pool.Exec(ctx, `INSERT INTO employer (employer_id, employer_fein, fineos_employer_id) VALUES (gen_random_uuid(), $1, $2)`,
				strconv.Itoa(firstFEIN+i), firstFineosID+i); err != nil {
				return err
			}
		}
		e.employers = true
	}
	e.awsProxy.Set(faultproxy.Cognito, faultproxy.Faults{Latency: o.cognitoLatency})
	e.fineosPx.Set(faultproxy.Fineos, faultproxy.Faults{Latency: o.fineosLatency})
	return nil
}

func benchWorkers(ctx context.Context, e *env, o options, r *report) error {
	if err := prepareRows(ctx, e, o); err != nil {
		return err
	}
	res, err := e.resources(ctx, "work")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "bui-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fein := func(i int) string { return strconv.Itoa(firstFEIN + i%employers) }

	if o.baselineRows > 0 {
		rate, err := baseline(ctx, e, res, o.baselineRows, fein)
		if err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		r.baseline = rate
	}
	unlimited := []string{"--cognito-get-rate", "0", "--cognito-create-rate", "0", "--cognito-password-rate", "0", "--fineos-rate", "0"}
	for _, c := range o.concurrencies {
		for _, w := range o.workerCounts {
			job := fmt.Sprintf("w%dc%d-%s", w, c, suffix())
			path, err := generate(dir, job, o.workerRows, fein)
			if err != nil {
				return err
			}
			log("workers: %d x --concurrency %d, %d rows", w, c, o.workerRows)
			args := append([]string{"--concurrency", strconv.Itoa(c)}, unlimited...)
			wr, err := runWorkers(ctx, e, o, res, job, path, o.workerRows, w, append(args, dbConns(o, w, c)...))
			if err != nil {
				return err
			}
			wr.label, wr.workers, wr.concurrency = fmt.Sprintf("%d x %d", w, c), w, c
			r.workers = append(r.workers, wr)
		}
	}
	return nil
}

// dbConns is the --db-max-conns flag that keeps the workers of a run
// within o.dbConns database connections together, as an operator sizes
// them for a server's max_connections (none when o.dbConns is 0: each
// worker opens its default, whatever its concurrency).
func dbConns(o options, workers, _ int) []string {
	if o.dbConns <= 0 {
		return nil
	}
	return []string{"--db-max-conns", strconv.Itoa(max(minWorkerConns, o.dbConns/workers))}
}

// minWorkerConns is the least --db-max-conns a worker with a budget takes.
const minWorkerConns = dbpool.MinRowConns + dbpool.ControlConns + 1

// runWorkers records and sends the rows (splitter), then starts the
// workers and measures until every row is final.
func runWorkers(ctx context.Context, e *env, o options, res bootstrap.Resources, job, path string, rows, workers int, args []string) (workerResult, error) {
	var wr workerResult
	env := e.processEnv(res, true)
	before := e.awsProxy.Counts()
	cmd := exec.CommandContext(ctx, filepath.Join(o.bin, "splitter"), "--job", job, "--force-registration", path)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil || sentCount(out) != rows {
		return wr, fmt.Errorf("splitter: %v\n%s", err, tail(out))
	}
	afterSplit := e.awsProxy.Counts()
	fineosBefore := e.fineos.Stats().Calls
	trips := e.trips.trips.Load()
	tx, err := e.transactions(ctx)
	if err != nil {
		return wr, err
	}
	start := time.Now()
	var procs []*exec.Cmd
	for range workers {
		p := exec.CommandContext(ctx, filepath.Join(o.bin, "worker"), append([]string{"--summary-interval", "-1s"}, args...)...)
		p.Env = env
		p.Stderr = os.Stderr
		if err := p.Start(); err != nil {
			return wr, err
		}
		procs = append(procs, p)
	}
	stopAll := func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			_ = p.Wait()
		}
	}
	polls := 0
	for {
		var queued int64
		polls++
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM bulk_import_row WHERE job_id = $1 AND state = 'queued'`, job).Scan(&queued); err != nil {
			stopAll()
			return wr, err
		}
		if queued == 0 {
			break
		}
		select {
		case <-ctx.Done():
			stopAll()
			return wr, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	wr.seconds = time.Since(start).Seconds()
	stopAll()
	var cpu time.Duration
	for _, p := range procs {
		cpu += cpuTime(p.ProcessState)
	}
	var failed int64
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM bulk_import_row WHERE job_id = $1 AND state <> 'succeeded'`, job).Scan(&failed); err != nil {
		return wr, err
	}
	if failed > 0 {
		return wr, fmt.Errorf("job %s: %d rows did not succeed", job, failed)
	}
	time.Sleep(time.Second) // let the server's statistics settle (ended backends flush them)
	tx2, err := e.transactions(ctx)
	if err != nil {
		return wr, err
	}
	after := e.awsProxy.Counts()
	n := float64(rows)
	delta := func(from, to map[string]int64, keys ...string) float64 {
		var d int64
		for _, k := range keys {
			d += to[k] - from[k]
		}
		return float64(d) / n
	}
	wr.rows = rows
	wr.cost = cost{
		sends:        delta(before, afterSplit, "sqs.op.SendMessageBatch", "sqs.op.SendMessage"),
		receives:     delta(afterSplit, after, "sqs.op.ReceiveMessage"),
		deletes:      delta(afterSplit, after, "sqs.op.DeleteMessageBatch", "sqs.op.DeleteMessage"),
		visibility:   delta(afterSplit, after, "sqs.op.ChangeMessageVisibility", "sqs.op.ChangeMessageVisibilityBatch"),
		trips:        float64(e.trips.trips.Load()-trips) / n,
		transactions: float64(tx2-tx-int64(polls)-2) / n, // minus this harness's own queries
		cpuMillis:    float64(cpu.Milliseconds()) / n,
		cognito:      delta(afterSplit, after, "cognito.requests"),
		fineos:       float64(e.fineos.Stats().Calls-fineosBefore) / n,
	}
	return wr, nil
}

// baseline runs the original algorithm: one row after another, each
// waiting on its calls, with the same latencies.
func baseline(ctx context.Context, e *env, res bootstrap.Resources, rows int, fein func(int) string) (float64, error) {
	cfg, err := awsconf.Load(ctx, "us-east-1",
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("bench", "bench", "")),
		config.WithBaseEndpoint(e.awsURL))
	if err != nil {
		return 0, err
	}
	store, err := pfml.NewStore(ctx, e.pool)
	if err != nil {
		return 0, err
	}
	fc, err := fineos.New(fineosstub.DefaultOptions().Config(e.fineosURL), nil)
	if err != nil {
		return 0, err
	}
	reg := &register.Registrar{PFML: store, Rows: lifecycle.New(e.pool, nil, logging.Discard()), Cognito: cognito.New(awsconf.Cognito(cfg), res.UserPoolID), Fineos: fc, Log: logging.Discard()}
	log("baseline: the original algorithm, %d rows one after another", rows)
	start := time.Now()
	for i := range rows {
		if _, err := reg.Register(ctx, logging.Discard(), register.Request{
			Email: fmt.Sprintf("baseline-%d@bench.example.com", i), FEIN: fein(i), ForceRegistration: true,
		}); err != nil {
			return 0, err
		}
	}
	return float64(rows) / time.Since(start).Seconds(), nil
}
