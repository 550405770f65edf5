// Command bench measures the import pipeline on this machine and writes a
// Markdown report (make bench): the splitter's rate and memory against the
// naive one-message-at-a-time way, the workers' end-to-end throughput with
// latency injected in front of Cognito and FINEOS, for 1, 2 and 4 worker
// processes and two concurrencies, against the original sequential
// algorithm, the cost of a row in SQS requests, database round trips and
// transactions, and CPU time, and the fleet budgets: how evenly workers
// share one, how the busy workers take an idle one's share, and how the
// fleet settles under an account quota below it.
//
// Usage: go run ./localstack/bench [flags]   (make bench builds bin/ first)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

type options struct {
	bin              string
	out              string
	serverURL        string
	splitRows        []int
	naiveRows        int
	workerRows       int
	workerCounts     []int
	concurrencies    []int
	baselineRows     int
	cognitoLatency   time.Duration
	fineosLatency    time.Duration
	budget           float64
	budgetWorkers    []int
	budgetSeconds    int
	budgetWarmup     time.Duration
	budgetJoin       bool
	quota            float64
	quotaBudget      float64
	quotaWorkers     int
	quotaSeconds     int
	skipBudgets      bool
	dbConns          int
	connsRows        int
	connsWorkers     int
	connsConcurrency int
	connsRepeats     int
	skipConns        bool
	skipSplitter     bool
	skipWorkers      bool
	skipGoBench      bool
	budgetsOnly      bool
	budgetIdle       bool
	idleWorkers      int
	budgetQuota      bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "naive-split" {
		os.Exit(naiveSplit(os.Args[2:]))
	}
	var o options
	var splitRows, workerCounts, concurrencies, budgetWorkers string
	flag.StringVar(&o.bin, "bin", "bin", "directory of the splitter and worker binaries (make build)")
	flag.StringVar(&o.out, "out", "localstack/bench/results.md", "where to write the report")
	flag.StringVar(&o.serverURL, "db", firstEnv("TEST_DATABASE_URL", "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"), "PostgreSQL server (a database is created on it and dropped)")
	flag.StringVar(&splitRows, "split-rows", "100000,1000000", "sizes of the generated CSVs for the splitter")
	flag.IntVar(&o.naiveRows, "naive-rows", 100000, "rows sent one SendMessage at a time for the naive baseline")
	flag.IntVar(&o.workerRows, "worker-rows", 20000, "new rows per worker run")
	flag.StringVar(&workerCounts, "workers", "1,2,4", "worker processes per run")
	flag.StringVar(&concurrencies, "concurrency", "16,64", "--concurrency settings per run")
	flag.IntVar(&o.baselineRows, "baseline-rows", 300, "rows of the original, sequential algorithm")
	flag.DurationVar(&o.cognitoLatency, "cognito-latency", 40*time.Millisecond, "latency added to each Cognito call")
	flag.DurationVar(&o.fineosLatency, "fineos-latency", 150*time.Millisecond, "latency added to each FINEOS call")
	flag.Float64Var(&o.budget, "budget", 40, "the fleet's AdminCreateUser budget (requests per second) in the budget runs")
	flag.StringVar(&budgetWorkers, "budget-workers", "1,2,4,8", "worker processes sharing the budget, one run each")
	flag.IntVar(&o.budgetSeconds, "budget-seconds", 20, "measured seconds of each budget run (and of each phase of the join/leave run), after 5 s of warm-up")
	flag.DurationVar(&o.budgetWarmup, "budget-warmup", 5*time.Second, "unmeasured start of each budget run")
	flag.BoolVar(&o.budgetJoin, "budget-join", true, "measure workers joining and leaving a budget")
	flag.Float64Var(&o.quota, "quota", 30, "the account's AdminCreateUser quota (requests per second) in the quota run")
	flag.Float64Var(&o.quotaBudget, "quota-budget", 80, "the fleet's budget in the quota run (above the quota)")
	flag.IntVar(&o.quotaWorkers, "quota-workers", 4, "worker processes in the quota run")
	flag.IntVar(&o.quotaSeconds, "quota-seconds", 60, "measured seconds of the quota run, after 5 s")
	flag.BoolVar(&o.skipBudgets, "skip-budgets", false, "skip the fleet budget measurements")
	flag.IntVar(&o.dbConns, "db-conns", 0, "database connections of all workers of a run together (--db-max-conns of each is this / workers; 0: each its default)")
	flag.IntVar(&o.connsRows, "conns-rows", 20000, "new rows per run of the connections comparison")
	flag.IntVar(&o.connsWorkers, "conns-workers", 4, "worker processes in the connections comparison")
	flag.IntVar(&o.connsConcurrency, "conns-concurrency", 64, "--concurrency of each worker in the connections comparison")
	flag.IntVar(&o.connsRepeats, "conns-repeats", 3, "runs of each setting in the connections comparison (alternating)")
	flag.BoolVar(&o.skipConns, "skip-conns", false, "skip the connections comparison")
	flag.BoolVar(&o.budgetsOnly, "budgets-only", false, "measure the fleet budgets alone (as -skip-splitter -skip-workers -skip-go-bench); with -budget-workers= -budget-join=false -budget-quota=false, only the idle run")
	flag.BoolVar(&o.budgetIdle, "budget-idle", true, "measure a budget shared by workers one of which is idle (an empty queue of its own)")
	flag.IntVar(&o.idleWorkers, "idle-workers", 4, "workers in the idle run, the idle one included")
	flag.BoolVar(&o.budgetQuota, "budget-quota", true, "measure the fleet under an account quota below its budget")
	flag.BoolVar(&o.skipSplitter, "skip-splitter", false, "skip the splitter measurements")
	flag.BoolVar(&o.skipWorkers, "skip-workers", false, "skip the worker measurements")
	flag.BoolVar(&o.skipGoBench, "skip-go-bench", false, "skip the Go benchmarks")
	flag.Parse()
	o.splitRows, o.workerCounts, o.concurrencies, o.budgetWorkers = ints(splitRows), ints(workerCounts), ints(concurrencies), ints(budgetWorkers)
	if o.budgetsOnly {
		o.skipSplitter, o.skipWorkers, o.skipGoBench, o.skipBudgets = true, true, true, false
		o.skipConns = true
	}
	if o.idleWorkers < 2 {
		fmt.Fprintln(os.Stderr, "bench: -idle-workers: want 2 or more (one of them idle)")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	report, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	fmt.Print(report)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(report), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "bench: wrote %s\n", o.out)
	}
}

func run(ctx context.Context, o options) (string, error) {
	for _, b := range []string{"splitter", "worker"} {
		if _, err := os.Stat(filepath.Join(o.bin, b)); err != nil {
			return "", fmt.Errorf("%s: %w (run make build first)", filepath.Join(o.bin, b), err)
		}
	}
	e, err := newEnv(ctx, o.serverURL)
	if err != nil {
		return "", err
	}
	defer e.close()
	r := &report{started: time.Now(), cpus: runtime.NumCPU(), opts: o, cpuModel: cpuModel()}
	if err := e.pool.QueryRow(ctx, `SELECT current_setting('max_connections')::int`).Scan(&r.maxConnections); err != nil {
		return "", fmt.Errorf("read max_connections: %w", err)
	}
	if !o.skipSplitter {
		if err := benchSplitter(ctx, e, o, r); err != nil {
			return "", fmt.Errorf("splitter: %w", err)
		}
	}
	if !o.skipWorkers {
		if err := benchWorkers(ctx, e, o, r); err != nil {
			return "", fmt.Errorf("workers: %w", err)
		}
	}
	if !o.skipConns {
		if err := benchConns(ctx, o, r); err != nil {
			return "", fmt.Errorf("connections: %w", err)
		}
	}
	if !o.skipBudgets {
		if err := benchBudgets(ctx, e, o, r); err != nil {
			return "", fmt.Errorf("budgets: %w", err)
		}
	}
	if !o.skipGoBench {
		r.goBench = goBenchmarks(ctx)
	}
	r.finished = time.Now()
	return r.markdown(), nil
}

func log(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func ints(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		var n int
		if _, err := fmt.Sscan(strings.TrimSpace(f), &n); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

func firstEnv(names ...string) string {
	for _, n := range names[:len(names)-1] {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return names[len(names)-1]
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "model name") {
			if _, v, ok := strings.Cut(line, ":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return runtime.GOARCH
}

// goBenchmarks runs the Go benchmarks of the hot pure-Go paths.
func goBenchmarks(ctx context.Context) string {
	log("go test -bench (CSV parsing, message encoding)")
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", ".", "-benchtime", "2s", "./shared/csvrows", "./shared/message")
	out, err := cmd.CombinedOutput()
	var keep []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "Benchmark") {
			keep = append(keep, line)
		}
	}
	if err != nil && len(keep) == 0 {
		return "go test -bench failed: " + err.Error()
	}
	return strings.Join(keep, "\n")
}
