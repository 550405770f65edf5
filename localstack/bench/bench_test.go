package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/localstack/proctest"
)

// TestMain lets the test binary play the naive splitter, as the bench
// binary does: the harness runs itself for it.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "naive-split" {
		os.Exit(naiveSplit(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// TestHarnessRunsEndToEnd runs every measurement of make bench at a tiny
// size, so that the harness keeps working. It asserts nothing about the
// numbers: performance is read from make bench's report.
func TestHarnessRunsEndToEnd(t *testing.T) {
	dir, err := proctest.Build("splitter", "worker")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	o := options{
		bin: dir, serverURL: firstEnv("TEST_DATABASE_URL", "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
		splitRows: []int{300}, naiveRows: 50, workerRows: 60, workerCounts: []int{1, 2}, concurrencies: []int{4},
		baselineRows: 3, cognitoLatency: 5 * time.Millisecond, fineosLatency: 10 * time.Millisecond,
		dbConns: 10, skipGoBench: true, connsRows: 60, connsWorkers: 2, connsConcurrency: 4, connsRepeats: 1,
		budget: 10, budgetWorkers: []int{1, 2}, budgetSeconds: 2, budgetWarmup: time.Second, budgetJoin: true, budgetIdle: true, idleWorkers: 2, budgetQuota: true, quota: 4, quotaBudget: 8, quotaWorkers: 2, quotaSeconds: 3,
	}
	report, err := run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## 1. Splitter", "splitter, S3 (emulator)", "naive: one SendMessage per row", "## 2. Workers",
		"baseline: original, sequential", "share at most 10 database connections", "| 2 x 4 |", "## 3. Cost per row", "## 4. Fleet budgets",
		"### Sharing a budget of 10/s", "### Workers joining and leaving", "### One worker idle", "| 1 busy + 1 idle |", "### Under an account quota below the budget", "cores",
		"## 5. Database connections", "per repeat: "} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
}
