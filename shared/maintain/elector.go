package maintain

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/shared/clock"
	"github.com/massgov/bulk-user-import/shared/fleet"
)

// Elector takes part in the election of one leader among the processes
// that share a database: the leader holds a lease, a row of
// bulk_import_leader that names it, live while the leader's worker is
// alive in the fleet's registry (its heartbeat, package fleet, younger
// than the lease: the database's clock). Every third of the lease each
// process beats and either keeps its lease or, when the lease's holder is
// no longer alive (it died), takes it. So a leader that dies is replaced
// within the lease plus a third of it; one that stops resigns and is
// replaced within a third of the lease.
//
// A process considers itself leader until its lease would run out by its
// own clock, counted from before its last attempt that confirmed it holds
// the lease: never longer than the database grants it (its heartbeat is at
// least that recent). Each term has a context (Lead) that ends when the
// lease is lost, runs out, or is resigned: the leader's work runs on it
// and stops with the leadership. (Should its attempts fail while its
// other beats succeed, it stops leading and nobody takes over until they
// succeed again: a pause of the maintenance, never two leaders.)
type Elector struct {
	pool  *pgxpool.Pool
	name  string
	id    string
	lease time.Duration
	log   *slog.Logger
	// Clock is the time source (nil: the system clock); set it before Run.
	Clock clock.Clock

	mu        sync.Mutex
	leader    bool
	confirmed time.Time          // the last attempt that confirmed the lease was sent then
	term      int                // counts the elections won, so callers can tell a new term
	termCtx   context.Context    // ends with the current term
	endTerm   context.CancelFunc // ends it
	expiry    clock.Timer        // ends it when the lease runs out unrenewed

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

// validUntilLocked is when the lease runs out by this process's clock:
// a lease after its last confirmation.
func (e *Elector) validUntilLocked() time.Time { return e.confirmed.Add(e.lease) }

func (e *Elector) clock() clock.Clock { return clock.OrReal(e.Clock) }

// Lead returns a context for the leader's work, which ends when ctx does
// or when this term ends (the lease is lost, runs out unrenewed, or is
// resigned), and true; or false when this process does not lead now.
// Call stop when the work is done.
func (e *Elector) Lead(ctx context.Context) (lead context.Context, stop context.CancelFunc, ok bool) {
	e.mu.Lock()
	term := e.termCtx
	leading := e.leader && e.clock().Now().Before(e.validUntilLocked()) && term != nil && term.Err() == nil
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

// queueAttempt queues, into a batch (one transaction), this worker's beat
// and the keeping or taking of the named lease: the lease's row is created
// if there is none, locked, and only then, in a statement of its own that
// sees every commit made before the lock was granted (the holder's beat
// among them), kept by its holder or taken from a holder that is not alive
// within its lease. into is set when this process holds the lease.
// expires_at is kept for workers of earlier versions, which read it.
func (e *Elector) queueAttempt(b *pgx.Batch, into *bool) {
	lease := e.lease.Seconds()
	b.Queue(fleet.BeatSQL, e.id)
	b.Queue(`INSERT INTO bulk_import_leader (name, leader_id, elected_at, expires_at, lease)
		VALUES ($1, $2, now(), now() + $3 * interval '1 second', $3) ON CONFLICT (name) DO NOTHING`, e.name, e.id, lease)
	b.Queue(`SELECT 1 FROM bulk_import_leader WHERE name = $1 FOR UPDATE`, e.name)
	b.Queue(`UPDATE bulk_import_leader l SET leader_id = $2, expires_at = now() + $3 * interval '1 second', lease = $3,
			elected_at = CASE WHEN l.leader_id = $2 THEN l.elected_at ELSE now() END
		WHERE l.name = $1 AND (l.leader_id = $2 OR NOT EXISTS (SELECT 1 FROM bulk_import_worker w WHERE w.worker_id = l.leader_id
			AND w.heartbeat_at > now() - coalesce(l.lease, $3) * interval '1 second'))`, e.name, e.id, lease).
		Exec(func(tag pgconn.CommandTag) error {
			*into = tag.RowsAffected() == 1
			return nil
		})
}

// Attempt beats and keeps this process's lease or, when nobody alive
// holds it, takes it, and reports whether this process is leader.
func (e *Elector) Attempt(ctx context.Context) bool {
	clk := e.clock()
	start := clk.Now()
	actx, cancel := context.WithTimeout(ctx, e.lease/3)
	defer cancel()
	var won bool
	b := &pgx.Batch{}
	e.queueAttempt(b, &won)
	err := e.pool.SendBatch(actx, b).Close()
	e.mu.Lock()
	defer e.mu.Unlock()
	was := e.leader && start.Before(e.validUntilLocked()) && e.termCtx != nil && e.termCtx.Err() == nil
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
		e.leader, e.confirmed = true, start
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
		e.armExpiryLocked()
	default:
		if was {
			e.log.Warn("maintainer: lost the leader's lease to another worker", "leader_id", e.id)
		}
		e.leader = false
		e.endTermLocked()
	}
	return e.leader
}

// armExpiryLocked ends the term when the lease runs out by this process's
// clock (each confirmation re-arms it).
func (e *Elector) armExpiryLocked() {
	if e.expiry != nil {
		e.expiry.Stop()
	}
	clk := e.clock()
	e.expiry = clock.AfterFunc(clk, e.validUntilLocked().Sub(clk.Now()), e.endTerm)
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
// the lease is live (its worker alive within the lease). ok is false when
// nobody holds it.
func Leader(ctx context.Context, pool *pgxpool.Pool, name string) (id string, live, ok bool, err error) {
	rows, err := pool.Query(ctx, `SELECT l.leader_id, CASE WHEN l.lease IS NULL THEN l.expires_at > now() ELSE EXISTS (
			SELECT 1 FROM bulk_import_worker w WHERE w.worker_id = l.leader_id AND w.heartbeat_at > now() - l.lease * interval '1 second') END
		FROM bulk_import_leader l WHERE l.name = $1`, name)
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
