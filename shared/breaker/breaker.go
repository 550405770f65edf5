// Package breaker pauses the work that needs a dependency while that
// dependency is misconfigured or down: credentials refused, a user pool
// that does not exist, a database that went read-only. Such faults are the
// pipeline's, not a row's; failing rows for them would fail a whole import
// in seconds. A Breaker opens on the first such fault (Trip), logs one
// ERROR line naming the fault and its fix, and then probes the dependency,
// one request at a time with a growing interval, until a probe succeeds;
// then it closes and the work resumes by itself.
//
// Which errors trip a breaker is decided by the classifier
// (register.Classify); this package only keeps the state.
package breaker

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/massgov/bulk-user-import/shared/clock"
	"github.com/massgov/bulk-user-import/shared/mask"
	"github.com/massgov/bulk-user-import/shared/retry"
)

// Dependency names what a breaker guards.
type Dependency string

// Dependencies of the registration.
const (
	Cognito  Dependency = "cognito"
	Fineos   Dependency = "fineos"
	Database Dependency = "database"
)

// Fault is why a breaker is open.
type Fault struct {
	Code  string    `json:"code"`  // the error code, as in the README's table
	Error string    `json:"error"` // what the dependency said
	Fix   string    `json:"fix"`   // what the operator should do
	Since time.Time `json:"since"`
}

// Defaults of the probe schedule.
const (
	DefaultProbeInitial = 2 * time.Second
	DefaultProbeMax     = 30 * time.Second
)

// Breaker is the state of one dependency. The zero value is not ready:
// use New.
type Breaker struct {
	dep   Dependency
	probe func(ctx context.Context) error
	log   *slog.Logger
	// ProbeInitial and ProbeMax space the probes: the first comes
	// ProbeInitial after the breaker opened, each next one twice as late,
	// up to ProbeMax.
	ProbeInitial, ProbeMax time.Duration
	// OnChange, if set, hears of every opening and closing (for metrics
	// and the worker registry).
	OnChange func(dep Dependency, open bool, f Fault)
	// Clock times the probes (nil: the system's clock). Set it before
	// the breaker is used.
	Clock clock.Clock

	mu        sync.Mutex
	open      bool
	fault     Fault
	nextProbe time.Time
	probes    *backoff.ExponentialBackOff // spaces this opening's probes
	closed    chan struct{}               // closed while the breaker is closed
	kick      chan struct{}               // wakes the prober when the breaker opens
}

// New returns a closed breaker for dep; probe tells whether the dependency
// works again (nil: it does).
func New(dep Dependency, probe func(ctx context.Context) error, log *slog.Logger) *Breaker {
	closed := make(chan struct{})
	close(closed)
	return &Breaker{dep: dep, probe: probe, log: log, ProbeInitial: DefaultProbeInitial, ProbeMax: DefaultProbeMax,
		closed: closed, kick: make(chan struct{}, 1)}
}

// Dependency returns what the breaker guards.
func (b *Breaker) Dependency() Dependency { return b.dep }

// Trip opens the breaker with the fault, unless it is open already. The
// opening is logged once, at ERROR, with the fix.
func (b *Breaker) Trip(code, errText, fix string) {
	b.mu.Lock()
	if b.open {
		b.mu.Unlock()
		return
	}
	now := clock.OrReal(b.Clock).Now()
	b.open = true
	// The fault is shown by splitter status (through the worker registry):
	// any email or FEIN the error echoes is masked.
	b.fault = Fault{Code: code, Error: mask.Text(errText), Fix: fix, Since: now}
	b.probes = retry.Schedule{Initial: b.ProbeInitial, Max: b.ProbeMax}.BackOff()
	probeIn := b.probes.NextBackOff()
	b.nextProbe = now.Add(probeIn)
	b.closed = make(chan struct{})
	f := b.fault
	b.mu.Unlock()
	b.log.Error("paused: "+string(b.dep)+" refuses the pipeline's requests; work that needs it waits and no row is failed for it",
		"dependency", string(b.dep), "error_code", code, "err", f.Error, "fix", fix, "probe_in", probeIn.String())
	select {
	case b.kick <- struct{}{}:
	default:
	}
	if b.OnChange != nil {
		b.OnChange(b.dep, true, f)
	}
}

// State reports whether the breaker is open, why, and when the next probe
// is due.
func (b *Breaker) State() (open bool, f Fault, nextProbe time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.open, b.fault, b.nextProbe
}

// Open reports whether the breaker is open.
func (b *Breaker) Open() bool {
	open, _, _ := b.State()
	return open
}

// MaxRetryIn bounds RetryIn: once the dependency answers again, the work
// it paused is back within this.
const MaxRetryIn = 10 * time.Second

// RetryIn is how long work that found the breaker open should wait before
// it is tried again: until shortly after the next probe, between a second
// and MaxRetryIn.
func (b *Breaker) RetryIn() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return 0
	}
	d := b.nextProbe.Sub(clock.OrReal(b.Clock).Now()) + time.Second + rand.N(time.Second)
	return min(max(d, time.Second), MaxRetryIn)
}

// Closed returns a channel that is closed while the breaker is closed.
func (b *Breaker) Closed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Run probes the dependency while the breaker is open, until ctx ends:
// one probe at a time, ProbeInitial after the opening, then at doubling
// intervals up to ProbeMax. A successful probe closes the breaker.
func (b *Breaker) Run(ctx context.Context) {
	clk := clock.OrReal(b.Clock)
	for {
		if !b.waitProbe(ctx, clk) {
			if ctx.Err() != nil {
				return
			}
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := b.probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		b.mu.Lock()
		if err == nil {
			f := b.fault
			b.open = false
			close(b.closed)
			b.mu.Unlock()
			b.log.Info("resumed: "+string(b.dep)+" answers again", "dependency", string(b.dep), "error_code", f.Code,
				"paused_for", clk.Now().Sub(f.Since).Round(time.Second).String())
			if b.OnChange != nil {
				b.OnChange(b.dep, false, f)
			}
			continue
		}
		wait := b.probes.NextBackOff()
		b.nextProbe = clk.Now().Add(wait)
		b.mu.Unlock()
		b.log.Warn("still paused: the probe of "+string(b.dep)+" failed", "dependency", string(b.dep), "err", err.Error(),
			"next_probe_in", wait.String())
	}
}

// waitProbe waits, while the breaker is open, until its next probe is due
// (true); while it is closed, until it opens, or until ctx ends (false).
func (b *Breaker) waitProbe(ctx context.Context, clk clock.Clock) bool {
	b.mu.Lock()
	open, next := b.open, b.nextProbe
	b.mu.Unlock()
	var due <-chan time.Time
	if open {
		t := clk.NewTimer(next.Sub(clk.Now()))
		defer t.Stop()
		due = t.C()
	}
	select {
	case <-ctx.Done():
		return false
	case <-b.kick:
		return false
	case <-due:
		return true
	}
}
