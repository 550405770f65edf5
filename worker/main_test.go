package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/shared/config"
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
