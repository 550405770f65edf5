package maintain

import (
	"context"

	"github.com/massgov/bulk-user-import/shared/lifecycle"
)

// announcer publishes the completion events that are due (after the
// completer, so that a completion and its result files are announced in
// the tick that recorded them): one per job's latest completion, retried
// with backoff until published (lifecycle.PublishEvent).
type announcer struct{ m *Maintainer }

func (a *announcer) name() string { return "announcer" }

func (a *announcer) run(ctx context.Context) error {
	m := a.m
	for range completeBatch {
		if ctx.Err() != nil {
			return nil
		}
		_, out, err := m.Lifecycle.PublishEvent(ctx)
		switch out {
		case lifecycle.EventPublished:
			m.Metrics.EventsPublished.Add(1)
		case lifecycle.EventSkippedOut:
			m.Metrics.EventsSkipped.Add(1)
		case lifecycle.EventFailed:
			m.Metrics.EventsFailed.Add(1)
		}
		if err != nil || out == lifecycle.EventNothing {
			return err
		}
	}
	return nil
}
