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
	rate              *rateResult
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
		fmt.Fprintf(&b, "## 2. Workers, end to end\n\n%d new rows per run with force registration (Cognito AdminGetUser, AdminCreateUser, AdminSetUserPassword; PostgreSQL; FINEOS), %s latency added to every Cognito call and %s to every FINEOS call; no client-side rate limit; the workers of a run share at most %d database connections (`--db-max-conns` of each: that / workers, at most concurrency + 4; the server's `max_connections` is %d). Time runs from starting the workers until every row is final.",
			o.workerRows, o.cognitoLatency, o.fineosLatency, o.dbConns, r.maxConnections)
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

	if r.rate != nil {
		rr := r.rate
		fmt.Fprintf(&b, "## 3. Under a Cognito rate limit\n\n%d workers, each with `--cognito-create-rate %.4g`, so R = %.4g AdminCreateUser requests per second in all (one per new row); %d rows. Sustained: rows finished per second between the 10th and the 90th percentile of finishing times.\n\n",
			rr.workers, rr.createRate, rr.limit, rr.rows)
		fmt.Fprintf(&b, "| R (requests/s) | sustained rows/s | share of R | whole run rows/s |\n|---:|---:|---:|---:|\n")
		fmt.Fprintf(&b, "| %.0f | %.1f | %.0f%% | %.1f |\n\n", rr.limit, rr.sustained, 100*rr.sustained/rr.limit, rr.overall)
	}

	if len(r.workers) > 0 {
		fmt.Fprintf(&b, "## 4. Cost per row\n\nPer row, in each run above. SQS requests counted at the proxy in front of the emulator (sends by the splitter; the rest by the workers, empty long polls at the end included); PostgreSQL round trips counted by a proxy in front of the server (a request after a response is one), transactions from `pg_stat_database` (the harness's own polling subtracted); CPU is the workers' user and system time. A row on the happy path costs exactly 2 transactions in 2 round trips (two pipelined batches); what the table shows above 2 is work per connection or per run (pgx prepares each statement once per connection, worker start-up, the job's completion), spread over the rows.\n\n")
		fmt.Fprintf(&b, "| workers x concurrency | SQS sends | SQS receives | SQS deletes | SQS visibility changes | receive + delete | PG round trips | PG transactions | worker CPU ms | Cognito calls | FINEOS calls |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, w := range r.workers {
			c := w.cost
			fmt.Fprintf(&b, "| %s | %.3f | %.3f | %.3f | %.3f | %.3f | %.2f | %.2f | %.2f | %.2f | %.2f |\n",
				w.label, c.sends, c.receives, c.deletes, c.visibility, c.receives+c.deletes, c.trips, c.transactions, c.cpuMillis, c.cognito, c.fineos)
		}
		b.WriteString("\n")
	}
	if r.goBench != "" {
		fmt.Fprintf(&b, "## Go benchmarks\n\n`go test -bench . ./shared/csvrows ./shared/message`:\n\n```\n%s\n```\n", r.goBench)
	}
	return b.String()
}
