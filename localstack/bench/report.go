package main

import (
	"fmt"
	"strings"
	"time"
)

type report struct {
	opts              options
	started, finished time.Time
	cpus              int
	cpuModel          string
	maxConnections    int
	split             []splitResult
	workers           []workerResult
	baseline          float64
	budgets           []budgetRun
	budgetJoin        *budgetRun
	budgetIdle        *budgetRun
	budgetQuota       *budgetRun
	connsSettings     []connsSetting
	conns             []connsRun
	goBench           string
}

func (r *report) markdown() string {
	var b strings.Builder
	o := r.opts
	fmt.Fprintf(&b, "# Benchmark results\n\n")
	fmt.Fprintf(&b, "Measured by `make bench` on %s, in one run of %s, on this machine: %d cores (%s). ",
		r.started.UTC().Format("2006-01-02 15:04Z"), r.finished.Sub(r.started).Round(time.Second), r.cpus, r.cpuModel)
	fmt.Fprintf(&b, "Everything shares those cores: PostgreSQL, the embedded AWS emulator, the FINEOS stub, the latency proxies and the measured processes.\n\n")

	if len(r.split) > 0 {
		fmt.Fprintf(&b, "## 1. Splitter\n\nRecord every row in PostgreSQL, then send one message per row (SendMessageBatch, 10 per call, 8 calls in flight), to the emulator. Peak memory is the process's maximum resident set.\n\n")
		fmt.Fprintf(&b, "| run | rows | seconds | rows/s | peak RSS (MiB) |\n|---|---:|---:|---:|---:|\n")
		for _, s := range r.split {
			fmt.Fprintf(&b, "| %s | %d | %.1f | %.0f | %.1f |\n", s.label, s.rows, s.seconds, s.rate(), float64(s.rssKiB)/1024)
		}
		b.WriteString("\n")
	}

	if len(r.workers) > 0 || r.baseline > 0 {
		fmt.Fprintf(&b, "## 2. Workers, end to end\n\n%d new rows per run with force registration (Cognito AdminGetUser, AdminCreateUser, AdminSetUserPassword; PostgreSQL; FINEOS), %s latency added to every Cognito call and %s to every FINEOS call; no client-side rate limit; %s (the server's `max_connections` is %d). Time runs from starting the workers until every row is final.",
			o.workerRows, o.cognitoLatency, o.fineosLatency, connsText(o.dbConns), r.maxConnections)
		if r.baseline > 0 {
			fmt.Fprintf(&b, " The baseline is the original algorithm: one row after another, same steps, same latencies (%d rows).", o.baselineRows)
		}
		b.WriteString("\n\n")
		fmt.Fprintf(&b, "| workers x concurrency | rows | seconds | rows/s | speed-up vs baseline |\n|---|---:|---:|---:|---:|\n")
		if r.baseline > 0 {
			fmt.Fprintf(&b, "| baseline: original, sequential | %d | %.1f | %.1f | 1.0 |\n", o.baselineRows, float64(o.baselineRows)/r.baseline, r.baseline)
		}
		for _, w := range r.workers {
			speedup := "-"
			if r.baseline > 0 {
				speedup = fmt.Sprintf("%.0f", w.rate()/r.baseline)
			}
			fmt.Fprintf(&b, "| %s | %d | %.1f | %.1f | %s |\n", w.label, w.rows, w.seconds, w.rate(), speedup)
		}
		b.WriteString("\n")
	}

	if len(r.workers) > 0 {
		fmt.Fprintf(&b, "## 3. Cost per row\n\nPer row, in each run above. SQS requests counted at the proxy in front of the emulator (sends by the splitter; the rest by the workers, empty long polls at the end included); PostgreSQL round trips counted by a proxy in front of the server (a request after a response is one), transactions from `pg_stat_database` (the harness's own polling subtracted); CPU is the workers' user and system time. A row on the happy path costs exactly 2 transactions in 2 round trips (two pipelined batches); what the table shows above 2 is work per connection or per run (pgx prepares each statement once per connection, worker start-up, the job's completion), spread over the rows.\n\n")
		fmt.Fprintf(&b, "| workers x concurrency | SQS sends | SQS receives | SQS deletes | SQS visibility changes | receive + delete | PG round trips | PG transactions | worker CPU ms | Cognito calls | FINEOS calls |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, w := range r.workers {
			c := w.cost
			fmt.Fprintf(&b, "| %s | %.3f | %.3f | %.3f | %.3f | %.3f | %.2f | %.2f | %.2f | %.2f | %.2f |\n",
				w.label, c.sends, c.receives, c.deletes, c.visibility, c.receives+c.deletes, c.trips, c.transactions, c.cpuMillis, c.cognito, c.fineos)
		}
		b.WriteString("\n")
	}
	if len(r.budgets) > 0 || r.budgetJoin != nil || r.budgetIdle != nil || r.budgetQuota != nil {
		r.budgetSection(&b)
	}
	if len(r.conns) > 0 {
		r.connsSection(&b)
	}
	if r.goBench != "" {
		fmt.Fprintf(&b, "## Go benchmarks\n\n`go test -bench . ./shared/csvrows ./shared/message`:\n\n```\n%s\n```\n", r.goBench)
	}
	return b.String()
}

// connsText says how the workers of a run were given connections.
func connsText(total int) string {
	if total <= 0 {
		return "each worker opens its default 8 database connections (`--db-max-conns`), whatever its concurrency"
	}
	return fmt.Sprintf("the workers of a run share at most %d database connections (`--db-max-conns` of each: that / workers)", total)
}

func (r *report) budgetSection(b *strings.Builder) {
	o := r.opts
	fmt.Fprintf(b, "## 4. Fleet budgets\n\nWorkers started with `--cognito-create-budget` share it through PostgreSQL (each takes the fleet's rate / the live workers, synced every second). New rows without force registration, %s latency on every Cognito call, `--concurrency 32` (far more demand than the budget), AdminCreateUser the only paced call. The rate is AdminCreateUser requests per second counted at the proxy in front of the emulator, after %s of warm-up; the windows are the slowest and the fastest 5-second windows of the measured span.\n\n", o.cognitoLatency, o.budgetWarmup)
	if len(r.budgets) > 0 {
		fmt.Fprintf(b, "### Sharing a budget of %.0f/s\n\n| workers | seconds | fleet rate | share of the budget | slowest 5 s | fastest 5 s | syncs/s per worker |\n|---|---:|---:|---:|---:|---:|---:|\n", o.budget)
		for _, x := range r.budgets {
			fmt.Fprintf(b, "| %s | %.0f | %.1f | %.0f%% | %.1f | %.1f | %.2f |\n", x.label, x.seconds, x.rate, 100*x.rate/x.budget, x.minWin, x.maxWin, x.syncsPerWorker)
		}
		b.WriteString("\n")
	}
	if j := r.budgetJoin; j != nil {
		fmt.Fprintf(b, "### Workers joining and leaving (budget %.0f/s)\n\n%d s per phase; two workers join at the start of the second phase (they notify the others, who lower their shares at once; each joiner takes its share once every other worker has synced since it joined), three stop at the start of the third (SIGTERM: they leave the fleet and notify; the last one takes their share at once). Slowest and fastest 5-second windows over all phases, transitions included: %.1f and %.1f (%.0f%% and %.0f%% of the budget).\n\n| phase | workers | fleet rate | share of the budget |\n|---|---:|---:|---:|\n",
			j.budget, o.budgetSeconds, j.minWin, j.maxWin, 100*j.minWin/j.budget, 100*j.maxWin/j.budget)
		for _, p := range j.phases {
			fmt.Fprintf(b, "| %s | %d | %.1f | %.0f%% |\n", p.label, p.workers, p.rate, 100*p.rate/j.budget)
		}
		b.WriteString("\n")
	}
	if x := r.budgetIdle; x != nil {
		idle := "-"
		if len(x.idleSeen) > 0 {
			idle = fmt.Sprintf("%d", x.idleSeen[len(x.idleSeen)-1])
		}
		fmt.Fprintf(b, "### One worker idle (budget %.0f/s)\n\n%d workers share the budget; the idle ones (%d) receive from an empty queue of their own (same database): with nothing in flight and nothing received for two syncs, a worker is idle and its share goes to the workers with work. Target: at least 95%% of the budget used. Idle workers the fleet counted at the end: %s.\n\n| workers | seconds | fleet rate | share of the budget | slowest 5 s | fastest 5 s | syncs/s per worker |\n|---|---:|---:|---:|---:|---:|---:|\n",
			x.budget, x.workers+x.idleWorkers, x.idleWorkers, idle)
		fmt.Fprintf(b, "| %s | %.0f | %.1f | %.1f%% | %.1f | %.1f | %.2f |\n\n", x.label, x.seconds, x.rate, 100*x.rate/x.budget, x.minWin, x.maxWin, x.syncsPerWorker)
	}
	if q := r.budgetQuota; q != nil {
		fmt.Fprintf(b, "### Under an account quota below the budget\n\nThe proxy in front of the emulator throttles AdminCreateUser over %.0f requests per second for every client together (a token bucket holding one second's worth), as an account quota does; the fleet's budget is %.0f/s, %d workers, %.0f s measured after %s. Throttled: the share of all AdminCreateUser attempts of the run (its start included) that the quota refused; the SDK retries them, and a row whose attempts all fail is retried later, so no row fails for it.\n\n| quota | budget | workers | accepted rate | share of the quota | slowest 5 s | fastest 5 s | throttled | rows failed | syncs/s per worker |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
			q.quota, q.budget, q.workers, q.seconds, o.budgetWarmup)
		fmt.Fprintf(b, "| %.0f | %.0f | %d | %.1f | %.1f%% | %.1f | %.1f | %.2f%% | %d | %.2f |\n\n", q.quota, q.budget, q.workers, q.rate, 100*q.rate/q.quota, q.minWin, q.maxWin, 100*q.throttledShare, q.failed, q.syncsPerWorker)
	}
	fmt.Fprintf(b, "Coordination costs one database round trip per sync: a sync a second per worker, and one more at once when a call is throttled (at most ten a second); the syncs/s columns are the workers' own counts (`budget_syncs` in their summary lines) over their lifetimes.\n\n")
}
