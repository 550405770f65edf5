package maintain

import "context"

// For the tests: one tick of the services, as the leader's loop runs it,
// and whether the elector leads now.

// Tick runs every service once if this process is the leader, on the
// leadership's context.
func (m *Maintainer) Tick(ctx context.Context) {
	m.setup()
	lead, stop, ok := m.Elector.Lead(ctx)
	if !ok {
		m.Metrics.Leader.Store(0)
		return
	}
	defer stop()
	m.Metrics.Leader.Store(1)
	m.tick(lead)
}

// IsLeader reports whether this process holds the lease now.
func (e *Elector) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leader && e.clock().Now().Before(e.validUntilLocked())
}
