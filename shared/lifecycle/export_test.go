package lifecycle

import (
	"context"
	"time"

	"github.com/massgov/bulk-user-import/shared/clock"
)

// RetryDelay exposes the result files' retry schedule to the tests.
func (l *Lifecycle) RetryDelay(failures int) time.Duration { return l.retryDelay(failures) }

// ClaimHeld builds a claim valid until validUntil by clk and returns its
// check, for the tests of the fence before each write.
func ClaimHeld(clk clock.Clock, validUntil time.Time) func() error {
	return (&claim{clk: clk, validUntil: validUntil}).held
}

// Exceeded exposes the failure limits' check to the tests.
var Exceeded = exceeded

// PublishEventStalled is PublishEvent with stall run between the claim and
// the publish: a process stopped or starved there.
func (l *Lifecycle) PublishEventStalled(ctx context.Context, stall func()) (EventOutcome, error) {
	c, err := l.claimEvent(ctx)
	if err != nil || c == nil {
		return EventNothing, err
	}
	stall()
	out, perr := l.announce(ctx, c)
	return l.recordEvent(ctx, c, out, perr, l.log)
}
