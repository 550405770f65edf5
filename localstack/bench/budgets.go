package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/massgov/bulk-user-import/localstack/faultproxy"
	"github.com/massgov/bulk-user-import/localstack/proctest"
	"github.com/massgov/bulk-user-import/shared/budget"
)

// budgetRun is one measured run of workers sharing an AdminCreateUser
// budget.
type budgetRun struct {
	label   string
	workers int     // at the start
	budget  float64 // requests per second for the fleet
	quota   float64 // the account's quota at the proxy (0: none)
	seconds float64 // measured span
	rate    float64 // AdminCreateUser requests per second the fleet sent (quota: accepted) over the measured span
	minWin  float64 // slowest and fastest 5-second window
	maxWin  float64
	phases  []phase
	// With a quota.
	throttledShare float64 // of the create calls over the whole run, start included
	failed         int64   // rows failed
	// Coordination: fleet syncs (one database round trip each) per worker per second.
	syncsPerWorker float64
	// The fleet's rate (bulk_import_budget) every second of the run.
	fleetRates []float64
	// Workers started on an empty queue of their own (same database), and
	// how many live workers the fleet counted idle each second.
	idleWorkers int
	idleSeen    []int
}

type phase struct {
	label   string
	workers int
	rate    float64
}

// sampler records a counter of the AWS proxy every 100 ms.
type sampler struct {
	mu     sync.Mutex
	at     []time.Time
	values []map[string]int64
	stop   chan struct{}
	done   chan struct{}
}

func sample(p *faultproxy.Proxy) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			s.mu.Lock()
			s.at, s.values = append(s.at, time.Now()), append(s.values, p.Counts())
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) close() { close(s.stop); <-s.done }

// rate is the rate of the counters keys between from and to (since the
// sampler's start).
func (s *sampler) rate(from, to time.Duration, keys ...string) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	t0 := s.at[0]
	var a, b int
	for i, at := range s.at {
		if at.Sub(t0) <= from {
			a = i
		}
		if at.Sub(t0) <= to {
			b = i
		}
	}
	if b <= a {
		return 0
	}
	var n int64
	for _, k := range keys {
		n += s.values[b][k] - s.values[a][k]
	}
	return float64(n) / s.at[b].Sub(s.at[a]).Seconds()
}

// windows returns the slowest and fastest window of length w between from and to.
func (s *sampler) windows(from, to, w time.Duration, keys ...string) (lo, hi float64) {
	lo = -1
	for t := from; t+w <= to; t += w {
		r := s.rate(t, t+w, keys...)
		if lo < 0 || r < lo {
			lo = r
		}
		hi = max(hi, r)
	}
	return max(lo, 0), hi
}

// budgetWorker is a worker process whose log is kept (for its last summary).
type budgetWorker struct {
	cmd *exec.Cmd
	log *proctest.Buffer
}

func startBudgetWorker(ctx context.Context, o options, env []string, args []string) (*budgetWorker, error) {
	w := &budgetWorker{log: &proctest.Buffer{}}
	w.cmd = exec.CommandContext(ctx, filepath.Join(o.bin, "worker"), args...)
	w.cmd.Env = append(env, "LOG_LEVEL=info")
	w.cmd.Stderr = w.log
	if err := w.cmd.Start(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *budgetWorker) stop() {
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	_ = w.cmd.Wait()
}

// syncs is the budget_syncs of the worker's last summary line.
func (w *budgetWorker) syncs() int64 {
	var last int64
	sc := bufio.NewScanner(bytes.NewReader([]byte(w.log.String())))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg   string `json:"msg"`
			Syncs int64  `json:"budget_syncs"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "summary" {
			last = line.Syncs
		}
	}
	return last
}

// fleetRun is a run of budget workers: it starts and stops them and
// marks the phases of the run on the sampler's clock.
type fleetRun struct {
	ctx     context.Context
	o       options
	env     []string
	args    []string
	smp     *sampler
	procs   []*budgetWorker
	started []time.Time
	stopped []time.Time
	phases  []phase
	marks   [][2]time.Duration
}

func (f *fleetRun) start(n int) error { return f.startWith(f.env, n) }

// startWith starts n workers with this environment.
func (f *fleetRun) startWith(env []string, n int) error {
	for range n {
		w, err := startBudgetWorker(f.ctx, f.o, env, f.args)
		if err != nil {
			return err
		}
		f.procs, f.started, f.stopped = append(f.procs, w), append(f.started, time.Now()), append(f.stopped, time.Time{})
	}
	return nil
}

// stop stops n running workers (the first started first), together.
func (f *fleetRun) stop(n int) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range f.procs {
		if n > 0 && f.stopped[i].IsZero() {
			f.stopped[i] = time.Now() // no longer running; the exit time follows
			wg.Go(func() {
				f.procs[i].stop()
				mu.Lock()
				f.stopped[i] = time.Now()
				mu.Unlock()
			})
			n--
		}
	}
	wg.Wait()
}

func (f *fleetRun) running() int {
	n := 0
	for _, s := range f.stopped {
		if s.IsZero() {
			n++
		}
	}
	return n
}

// phase lets the fleet run for d and records it as a phase.
func (f *fleetRun) phase(label string, d time.Duration) {
	from := time.Since(f.smp.at[0])
	time.Sleep(d)
	f.phases = append(f.phases, phase{label: label, workers: f.running()})
	f.marks = append(f.marks, [2]time.Duration{from, time.Since(f.smp.at[0])})
}

// benchBudgets measures the fleet budgets: the fleet's AdminCreateUser
// rate for a budget with 1, 2, 4 and 8 workers; while workers join and
// leave; with one worker of four idle (its share goes to the others); and
// under an account quota below the budget (AIMD), with its throttled
// share and the coordination's cost.
func benchBudgets(ctx context.Context, e *env, o options, r *report) error {
	if err := prepareRows(ctx, e, o); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "bui-bench-budget-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fein := func(i int) string { return strconv.Itoa(firstFEIN + i%employers) }
	secs := time.Duration(o.budgetSeconds) * time.Second
	warmup := o.budgetWarmup

	// run measures workers on the job's queue, and idle ones on an empty
	// queue of their own.
	run := func(label string, workers, idle int, budget, quota float64, span time.Duration, script func(f *fleetRun) error) (budgetRun, error) {
		br := budgetRun{label: label, workers: workers, budget: budget, quota: quota, idleWorkers: idle}
		res, err := e.resources(ctx, "budget")
		if err != nil {
			return br, err
		}
		rows := int(max(budget, quota)*(span+warmup).Seconds()*1.2) + 200
		job := "budget-" + suffix()
		path, err := generate(dir, job, rows, fein)
		if err != nil {
			return br, err
		}
		env := e.processEnv(res, true)
		cmd := exec.CommandContext(ctx, filepath.Join(o.bin, "splitter"), "--job", job, path)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil || sentCount(out) != rows {
			return br, fmt.Errorf("splitter: %v\n%s", err, tail(out))
		}
		if quota > 0 {
			e.awsProxy.SetQuota("AdminCreateUser", faultproxy.Quota{Rate: quota})
			defer e.awsProxy.SetQuota("AdminCreateUser", faultproxy.Quota{})
		}
		f := &fleetRun{ctx: ctx, o: o, env: env, smp: sample(e.awsProxy),
			args: append([]string{"--concurrency", "32", "--summary-interval", "1s", "--shutdown-timeout", "2s", "--cognito-create-budget", strconv.FormatFloat(budget, 'f', -1, 64),
				"--cognito-get-rate", "0", "--cognito-password-rate", "0", "--fineos-rate", "0"}, dbConns(o, 8, 32)...)}
		defer f.stop(len(f.procs))
		if err := f.start(workers); err != nil {
			f.smp.close()
			return br, err
		}
		if idle > 0 {
			empty, err := e.resources(ctx, "budget-idle")
			if err != nil {
				f.smp.close()
				return br, err
			}
			idleEnv := append(slices.Clone(env), "IMPORT_QUEUE_URL="+empty.QueueURL, "IMPORT_DLQ_URL="+empty.DLQURL)
			if err := f.startWith(idleEnv, idle); err != nil {
				f.smp.close()
				return br, err
			}
		}
		rctx, stopRates := context.WithCancel(ctx)
		ratesDone := make(chan []float64, 1)
		var idleSeen []int // written by the goroutine until ratesDone
		go func() {
			var rates []float64
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-rctx.Done():
					ratesDone <- rates
					return
				case <-t.C:
				}
				var r float64
				if e.pool.QueryRow(rctx, `SELECT rate FROM bulk_import_budget WHERE name = 'cognito_create'`).Scan(&r) == nil {
					rates = append(rates, r)
				}
				if n, ok := idleCreators(rctx, e); ok {
					idleSeen = append(idleSeen, n)
				}
			}
		}()
		time.Sleep(warmup)
		if script != nil {
			err = script(f)
		} else {
			f.phase(fmt.Sprintf("%d workers", workers), span)
		}
		stopRates()
		br.fleetRates = <-ratesDone
		br.idleSeen = idleSeen
		f.stop(len(f.procs))
		var syncs int64
		var workerSeconds float64
		for i, w := range f.procs {
			syncs += w.syncs()
			workerSeconds += f.stopped[i].Sub(f.started[i]).Seconds()
		}
		f.smp.close()
		if err != nil {
			return br, err
		}
		keys := []string{"cognito.op.AdminCreateUser"}
		if quota > 0 {
			keys = []string{"cognito.quota.AdminCreateUser.accepted"}
		}
		from, to := f.marks[0][0], f.marks[len(f.marks)-1][1]
		br.seconds = (to - from).Seconds()
		br.rate = f.smp.rate(from, to, keys...)
		br.minWin, br.maxWin = f.smp.windows(from, to, 5*time.Second, keys...)
		if workerSeconds > 0 {
			br.syncsPerWorker = float64(syncs) / workerSeconds
		}
		br.phases = f.phases
		for i := range br.phases {
			br.phases[i].rate = f.smp.rate(f.marks[i][0], f.marks[i][1], keys...)
		}
		if quota > 0 {
			c := f.smp.values[len(f.smp.values)-1]
			acc, thr := c["cognito.quota.AdminCreateUser.accepted"], c["cognito.quota.AdminCreateUser.throttled"]
			if acc+thr > 0 {
				br.throttledShare = float64(thr) / float64(acc+thr)
			}
		}
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM bulk_import_row WHERE job_id = $1 AND state = 'failed'`, job).Scan(&br.failed); err != nil {
			return br, err
		}
		log("budget: %s: %.1f/s (5 s windows %.1f-%.1f), %.2f%% throttled, %d failed, %.2f syncs/s per worker; fleet rate each second: %s",
			label, br.rate, br.minWin, br.maxWin, 100*br.throttledShare, br.failed, br.syncsPerWorker, floats(br.fleetRates))
		if idle > 0 {
			log("budget: %s: idle workers counted each second: %v", label, br.idleSeen)
		}
		return br, nil
	}

	var br budgetRun
	for _, n := range o.budgetWorkers {
		log("budget: %d workers sharing %.0f AdminCreateUser/s", n, o.budget)
		br, err = run(fmt.Sprintf("%d workers", n), n, 0, o.budget, 0, secs, nil)
		if err != nil {
			return err
		}
		r.budgets = append(r.budgets, br)
	}

	if o.budgetJoin {
		log("budget: workers joining and leaving")
		br, err = run("2, then 4, then 1 workers", 2, 0, o.budget, 0, 3*secs, func(f *fleetRun) error {
			f.phase("2 workers", secs)
			if err := f.start(2); err != nil {
				return err
			}
			f.phase("2 joined: 4 workers", secs)
			f.stop(3)
			f.phase("3 left: 1 worker", secs)
			return nil
		})
		if err != nil {
			return err
		}
		r.budgetJoin = &br
	}

	if o.budgetIdle {
		busy := o.idleWorkers - 1
		log("budget: %d workers sharing %.0f AdminCreateUser/s, one of them idle (an empty queue)", o.idleWorkers, o.budget)
		br, err = run(fmt.Sprintf("%d busy + 1 idle", busy), busy, 1, o.budget, 0, secs, nil)
		if err != nil {
			return err
		}
		r.budgetIdle = &br
	}

	if o.budgetQuota {
		log("budget: %d workers, budget %.0f/s, account quota %.0f/s", o.quotaWorkers, o.quotaBudget, o.quota)
		qr, err := run(fmt.Sprintf("%d workers", o.quotaWorkers), o.quotaWorkers, 0, o.quotaBudget, o.quota, time.Duration(o.quotaSeconds)*time.Second, nil)
		if err != nil {
			return err
		}
		r.budgetQuota = &qr
	}
	return nil
}

// floats formats rates compactly.
func floats(fs []float64) string {
	var b strings.Builder
	for i, f := range fs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f", f)
	}
	return b.String()
}

// idleCreators is how many live workers the fleet counts idle for the
// AdminCreateUser budget (as splitter status says).
func idleCreators(ctx context.Context, e *env) (int, bool) {
	st, err := budget.Read(ctx, e.pool, 10*time.Second)
	if err != nil {
		return 0, false
	}
	for _, b := range st {
		if b.Name == budget.CognitoCreate {
			return b.Idle, true
		}
	}
	return 0, false
}
