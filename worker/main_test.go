package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/shared/config"
	"github.com/massgov/bulk-user-import/shared/dbpool"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
)

func TestTheResultsLeaseIsPositive(t *testing.T) {
	t.Parallel()
	f, err := parseFlags([]string{"--results-lease", "3s"}, config.Config{}, io.Discard)
	if err != nil || f.resultsLease != 3*time.Second {
		t.Fatalf("--results-lease 3s: %v, %v", f.resultsLease, err)
	}
	if f, err := parseFlags(nil, config.Config{}, io.Discard); err != nil || f.resultsLease != lifecycle.DefaultClaimLease {
		t.Fatalf("default: %v, %v", f.resultsLease, err)
	}
	for _, v := range []string{"0s", "-1s"} {
		if _, err := parseFlags([]string{"--results-lease", v}, config.Config{}, io.Discard); err == nil || !strings.Contains(err.Error(), "--results-lease "+v) {
			t.Errorf("--results-lease %s: %v", v, err)
		}
	}
}

// A worker's connections do not grow with its concurrency: --db-max-conns
// (8 by default) is all it opens, the listener of a budget included.
func TestTheConnectionsDoNotGrowWithConcurrency(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want dbpool.WorkerConns
	}{
		{[]string{"--concurrency", "4"}, dbpool.WorkerConns{Rows: 5, Control: 3}},
		{[]string{"--concurrency", "256"}, dbpool.WorkerConns{Rows: 5, Control: 3}},
		{[]string{"--concurrency", "256", "--cognito-create-budget", "40"}, dbpool.WorkerConns{Rows: 4, Control: 3, Listen: 1}},
		{[]string{"--concurrency", "64", "--db-max-conns", "20"}, dbpool.WorkerConns{Rows: 17, Control: 3}},
		{[]string{"--db-max-conns", "0"}, dbpool.WorkerConns{Rows: 5, Control: 3}}, // 0: the default, as before
	} {
		f, err := parseFlags(c.args, config.Config{}, io.Discard)
		if err != nil || f.conns != c.want {
			t.Errorf("%q: %+v, %v; want %+v", c.args, f.conns, err, c.want)
		}
	}
	if _, err := parseFlags([]string{"--db-max-conns", "5", "--cognito-create-budget", "40"}, config.Config{}, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "--db-max-conns 5: want at least 6") {
		t.Errorf("5 connections with a budget: %v", err)
	}
	if _, err := parseFlags([]string{"--db-max-conns", "-1"}, config.Config{}, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "--db-max-conns -1: want 0 (the default, 8) or more") {
		t.Errorf("-1 connections: %v", err)
	}
}
