package lifecycle

import "time"

// RetryDelay exposes the result files' retry schedule to the tests.
func (l *Lifecycle) RetryDelay(failures int) time.Duration { return l.retryDelay(failures) }
