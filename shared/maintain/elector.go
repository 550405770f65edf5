package maintain

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/shared/clock"
)

// Elector takes part in the election of one leader among the processes
// that share a database: the leader holds a lease, a row of
// bulk_import_leader that names it until expires_at (the database's
// clock). Every third of the lease each process either renews its lease
// or, when the lease has expired (its holder died), takes it. So a leader
// that dies is replaced within the lease plus a third of it; one that
// stops resigns and is replaced within a third of the lease.
//
// A process considers itself leader until its lease would expire by its
// own clock, counted from before the statement that won or renewed it:
// never longer than the database grants it. Each term has a context (Lead)
// that ends when the lease is lost, runs out unrenewed, or is resigned:
// the leader's work runs on it and stops with the leadership.
type Elector struct {
	pool  *pgxpool.Pool
	name  string
	id    string
	lease time.Duration
	log   *slog.Logger
	// Clock is the time source (nil: the system clock); set it before Run.
	Clock clock.Clock

	mu         sync.Mutex
	leader     bool
	validUntil time.Time
	term       int                // counts the elections won, so callers can tell a new term
	termCtx    context.Context    // ends with the current term
	endTerm    context.CancelFunc // ends it
	expiry     clock.Timer        // ends it when the lease runs out unrenewed

	elected chan struct{} // receives when this process becomes leader
}

// NewElector returns an elector for the named role with a lease of the
// given length; id names this process in the lease (fleet.NewID).
func NewElector(pool *pgxpool.Pool, name, id string, lease time.Duration, log *slog.Logger) *Elector {
	return &Elector{pool: pool, name: name, id: id, lease: lease, log: log, elected: make(chan struct{}, 1)}
}

// ID names this process in the lease.
func (e *Elector) ID() string { return e.id }

// Elected receives when this process becomes leader.
func (e *Elector) Elected() <-chan struct{} { return e.elected }

// IsLeader reports whether this process holds the lease now.
func (e *Elector) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leader && e.clock().Now().Before(e.validUntil)
}

func (e *Elector) clock() clock.Clock { return clock.OrReal(e.Clock) }

// Lead returns a context for the leader's work, which ends when ctx does
// or when this term ends (the lease is lost, runs out unrenewed, or is
// resigned), and true; or false when this process does not lead now.
// Call stop when the work is done.
func (e *Elector) Lead(ctx context.Context) (lead context.Context, stop context.CancelFunc, ok bool) {
	e.mu.Lock()
	term := e.termCtx
	leading := e.leader && e.clock().Now().Before(e.validUntil) && term != nil && term.Err() == nil
	e.mu.Unlock()
	if !leading {
		return nil, func() {}, false
	}
	lead, cancel := context.WithCancel(ctx)
	unhook := context.AfterFunc(term, cancel)
	return lead, func() { unhook(); cancel() }, true
}

// Term returns the number of elections this process has won; it changes
// when the process becomes leader again after losing the lease.
func (e *Elector) Term() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.term
}

// Run takes part in the election until ctx ends. It does not resign: call
// Resign once the leader's work has stopped.
func (e *Elector) Run(ctx context.Context) {
	every := e.lease / 3
	for {
		e.Attempt(ctx)
		// A little jitter, so that processes started together do not
		// all try at the same instant for ever.
		wait := every - time.Duration(rand.Int64N(int64(every/10)+1))
		if clock.Sleep(ctx, e.Clock, wait) != nil {
			return
		}
	}
}

// Attempt renews this process's lease or, when nobody holds a live one,
// takes it, and reports whether this process is leader.
func (e *Elector) Attempt(ctx context.Context) bool {
	clk := e.clock()
	start := clk.Now()
	actx, cancel := context.WithTimeout(ctx, e.lease/3)
	defer cancel()
	var won bool
	rows, err := e.pool.Query(actx, `INSERT INTO bulk_import_leader AS l (name, leader_id, elected_at, expires_at)
		VALUES ($1, $2, now(), now() + $3 * interval '1 second')
		ON CONFLICT (name) DO UPDATE SET leader_id = excluded.leader_id, expires_at = excluded.expires_at,
			elected_at = CASE WHEN l.leader_id = excluded.leader_id THEN l.elected_at ELSE now() END
		WHERE l.leader_id = excluded.leader_id OR l.expires_at < now()
		RETURNING true`, e.name, e.id, e.lease.Seconds())
	if err == nil {
		won = rows.Next()
		rows.Close()
		err = rows.Err()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	was := e.leader && start.Before(e.validUntil) && e.termCtx != nil && e.termCtx.Err() == nil
	switch {
	case err != nil:
		// Unknown: keep what the last answer granted, until it runs out
		// (the term's expiry ends it then).
		if ctx.Err() == nil {
			e.log.Warn("maintainer: leader election failed; retrying", "err", err, "was_leader", was)
		}
		e.leader = was
		return was
	case won:
		e.leader, e.validUntil = true, start.Add(e.lease)
		if !was {
			e.term++
			e.endTermLocked()
			e.termCtx, e.endTerm = context.WithCancel(context.Background())
			e.log.Info("maintainer: this worker is the leader", "leader_id", e.id, "lease", e.lease.String())
			select {
			case e.elected <- struct{}{}:
			default:
			}
		}
		if e.expiry != nil {
			e.expiry.Stop()
		}
		e.expiry = clock.AfterFunc(clk, e.validUntil.Sub(clk.Now()), e.endTerm)
	default:
		if was {
			e.log.Warn("maintainer: lost the leader's lease to another worker", "leader_id", e.id)
		}
		e.leader = false
		e.endTermLocked()
	}
	return e.leader
}

// endTermLocked ends the current term's context, if any.
func (e *Elector) endTermLocked() {
	if e.expiry != nil {
		e.expiry.Stop()
	}
	if e.endTerm != nil {
		e.endTerm()
	}
}

// Resign gives the lease up, so that another process takes it at its next
// attempt instead of waiting for it to expire.
func (e *Elector) Resign(ctx context.Context) {
	e.mu.Lock()
	was := e.leader
	e.leader = false
	e.endTermLocked()
	e.mu.Unlock()
	if _, err := e.pool.Exec(ctx, `DELETE FROM bulk_import_leader WHERE name = $1 AND leader_id = $2`, e.name, e.id); err != nil {
		e.log.Warn("maintainer: could not resign; another worker takes over when the lease expires", "err", err)
		return
	}
	if was {
		e.log.Info("maintainer: resigned the leader's lease", "leader_id", e.id)
	}
}

// Leader reads the current holder of the named lease: its id, and whether
// the lease is live. ok is false when nobody holds it.
func Leader(ctx context.Context, pool *pgxpool.Pool, name string) (id string, live, ok bool, err error) {
	rows, err := pool.Query(ctx, `SELECT leader_id, expires_at > now() FROM bulk_import_leader WHERE name = $1`, name)
	if err != nil {
		return "", false, false, fmt.Errorf("read the %s lease: %w", name, err)
	}
	defer rows.Close()
	if rows.Next() {
		if err := rows.Scan(&id, &live); err != nil {
			return "", false, false, fmt.Errorf("read the %s lease: %w", name, err)
		}
		ok = true
	}
	return id, live, ok, rows.Err()
}
