package maintain

import (
	"context"
	"errors"

	"github.com/massgov/bulk-user-import/shared/lifecycle"
)

// completeBatch bounds the jobs completed, and the result files written,
// per tick; the rest follow at the next.
const completeBatch = 100

// completer ends jobs: it cancels running jobs whose failures exceed
// their limits, records the completion of every job whose rows are all
// final (new ones, and ones a replay reopened), and writes the result
// files that are due: new completions', and failed writes' whose backoff
// has passed.
type completer struct{ m *Maintainer }

func (c *completer) name() string { return "completer" }

func (c *completer) run(ctx context.Context) error {
	m := c.m
	cancelled, lerr := m.Lifecycle.EnforceLimits(ctx)
	m.Metrics.JobsCancelled.Add(int64(len(cancelled)))
	done, cerr := m.Lifecycle.CompleteReady(ctx, completeBatch)
	m.Metrics.JobsCompleted.Add(int64(len(done)))
	for range completeBatch {
		if ctx.Err() != nil {
			break
		}
		_, out, err := m.Lifecycle.WriteResults(ctx, "")
		switch out {
		case lifecycle.Written:
			m.Metrics.ResultsWritten.Add(1)
		case lifecycle.Failed:
			m.Metrics.ResultsFailed.Add(1)
		}
		if err != nil || out == lifecycle.Nothing || ctx.Err() != nil {
			return errors.Join(lerr, cerr, err)
		}
	}
	return errors.Join(lerr, cerr)
}
