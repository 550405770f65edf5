// Package maintain runs the work no single message owns, in the spirit of
// River's maintenance services: among all running workers one is elected
// leader (a lease in PostgreSQL, elector.go), and on every tick its
// maintainer runs each service in turn:
//
//   - the completer (completer.go) cancels running jobs that failed more
//     than their limits allow, records the completion of every job whose
//     rows are all final, and writes their result files, retrying a failed
//     write with backoff;
//   - the announcer (announcer.go) publishes each completion's event
//     (SNS and/or EventBridge) once it commits, retrying until it is sent;
//   - the rescuer (rescuer.go) re-sends the messages of queued rows whose
//     message must be gone (the queue was purged, its retention passed),
//     judged by a bound derived from the queue's and the worker's settings;
//   - the cleaner (cleaner.go) deletes the per-row data of jobs finished
//     longer ago than the retention, keeping their counts.
//
// The services run on the leadership's context: they start when the
// process is elected and stop as soon as its lease is lost or runs out
// unrenewed. Every service is idempotent and claims what it changes, so a
// second leader for a moment (a lease that expired under a stalled
// process) does no harm.
package maintain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/massgov/bulk-user-import/shared/clock"
	"github.com/massgov/bulk-user-import/shared/enqueue"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/metrics"
	"github.com/massgov/bulk-user-import/shared/queue"
)

// LeaseName names the maintainer's lease in bulk_import_leader.
const LeaseName = "maintainer"

// Defaults.
const (
	DefaultInterval     = 5 * time.Second
	DefaultLease        = 30 * time.Second
	DefaultRetention    = 30 * 24 * time.Hour
	DefaultDLQRetention = 14 * 24 * time.Hour // SQS's longest
	// cleanEvery spaces the cleaner's runs: retention is counted in days.
	cleanEvery = time.Minute
)

// Config tunes the maintainer.
type Config struct {
	// Interval is the time between ticks (default 5 s): a job's
	// completion follows its last row within about one tick.
	Interval time.Duration
	// Lease is the leader's lease (default 30 s): a leader that died is
	// replaced within it plus a third of it.
	Lease time.Duration
	// RecoverAfter is the rescuer's bound: a queued row is presumed lost
	// when it has shown no sign of life for this long, and the import
	// queue has had no message waiting for this long. Required; see
	// consume.SilenceBound.
	RecoverAfter time.Duration
	// MaxReceiveCount is the import queue's: a row with that many attempts
	// had its message moved to the dead-letter queue by SQS, where it
	// stays for DLQRetention (default 14 days); it is recovered only
	// after that.
	MaxReceiveCount int
	DLQRetention    time.Duration
	// Retention: the row data of jobs finished longer ago than this is
	// deleted (0: kept for ever; default 30 days).
	Retention time.Duration
}

// SetDefaults fills zero fields (Retention's zero means "keep": use
// DefaultRetention explicitly).
func (c *Config) SetDefaults() {
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Lease == 0 {
		c.Lease = DefaultLease
	}
	if c.DLQRetention == 0 {
		c.DLQRetention = DefaultDLQRetention
	}
}

// Validate names every bad field.
func (c Config) Validate() error {
	var errs []error
	if c.Interval < 10*time.Millisecond || c.Interval > time.Hour {
		errs = append(errs, fmt.Errorf("maintainer interval %s: want 10ms to 1h", c.Interval))
	}
	if c.Lease < 300*time.Millisecond || c.Lease > time.Hour {
		errs = append(errs, fmt.Errorf("leader lease %s: want 300ms to 1h", c.Lease))
	}
	if c.RecoverAfter <= 0 {
		errs = append(errs, fmt.Errorf("recover-after %s: want more than 0", c.RecoverAfter))
	}
	if c.Retention < 0 {
		errs = append(errs, fmt.Errorf("retention %s: want 0 (keep everything) or more", c.Retention))
	}
	if c.MaxReceiveCount < 0 || c.DLQRetention < 0 {
		errs = append(errs, errors.New("max receive count and DLQ retention must not be negative"))
	}
	return errors.Join(errs...)
}

// Depther reads the import queue's depth.
type Depther interface {
	Depth(ctx context.Context) (queue.Depth, error)
}

var _ Depther = (*queue.Queue)(nil)

// Maintainer runs the services while its process is the leader.
type Maintainer struct {
	Config    Config
	Elector   *Elector
	Lifecycle *lifecycle.Lifecycle
	Jobs      *jobs.Store
	Queue     Depther           // the import queue
	Enqueuer  *enqueue.Enqueuer // re-sends to the import queue
	Log       *slog.Logger
	Metrics   *metrics.Worker // optional
	// Clock is the time source (nil: the system clock).
	Clock clock.Clock

	once     sync.Once
	services []service
}

func (m *Maintainer) now() time.Time { return clock.OrReal(m.Clock).Now() }

// setup fills the defaults and builds the services, once.
func (m *Maintainer) setup() {
	m.once.Do(func() {
		m.Config.SetDefaults()
		if m.Metrics == nil {
			m.Metrics = &metrics.Worker{}
		}
		m.services = []service{&completer{m: m}, &announcer{m: m}, &rescuer{m: m}, &cleaner{m: m}}
	})
}

// service is one duty of the maintainer, run once per tick while leader.
type service interface {
	name() string
	run(ctx context.Context) error
}

// Run takes part in the election and, each time this process is elected,
// runs the services on the leadership's context: a tick at once, then
// every Interval, until the lease is lost or ctx ends; then it resigns.
func (m *Maintainer) Run(ctx context.Context) error {
	m.setup()
	if err := m.Config.Validate(); err != nil {
		return fmt.Errorf("maintainer configuration: %w", err)
	}
	electorDone := make(chan struct{})
	go func() {
		defer close(electorDone)
		m.Elector.Run(ctx)
	}()
	defer func() {
		<-electorDone
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		m.Elector.Resign(rctx)
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.Elector.Elected():
		}
		lead, stop, ok := m.Elector.Lead(ctx)
		if !ok {
			continue
		}
		m.lead(lead)
		stop()
	}
}

// lead runs a tick every Interval until ctx (the leadership's) ends.
func (m *Maintainer) lead(ctx context.Context) {
	m.Metrics.Leader.Store(1)
	defer m.Metrics.Leader.Store(0)
	for {
		m.tick(ctx)
		if clock.Sleep(ctx, m.Clock, m.Config.Interval) != nil {
			return
		}
	}
}

// tick runs every service once, while ctx (the leadership's) lasts.
func (m *Maintainer) tick(ctx context.Context) {
	for _, s := range m.services {
		if ctx.Err() != nil {
			return
		}
		if err := s.run(ctx); err != nil && ctx.Err() == nil {
			m.Log.Error("maintainer: "+s.name()+" failed; retrying at the next tick", "err", err)
		}
	}
}
