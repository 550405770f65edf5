package lifecycle

import (
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
