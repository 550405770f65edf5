package maintain

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
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
// never longer than the database grants it.
type Elector struct {
	pool  *pgxpool.Pool
	name  string
	id    string
	lease time.Duration
	log   *slog.Logger

	mu         sync.Mutex
	leader     bool
	validUntil time.Time
	term       int // counts the elections won, so callers can tell a new term

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
	return e.leader && time.Now().Before(e.validUntil)
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
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// Attempt renews this process's lease or, when nobody holds a live one,
// takes it, and reports whether this process is leader.
func (e *Elector) Attempt(ctx context.Context) bool {
	start := time.Now()
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
	was := e.leader && start.Before(e.validUntil)
	switch {
	case err != nil:
		// Unknown: keep what the last answer granted, until it runs out.
		if ctx.Err() == nil {
			e.log.Warn("maintainer: leader election failed; retrying", "err", err, "was_leader", was)
		}
		e.leader = was
		return was
	case won:
		e.leader, e.validUntil = true, start.Add(e.lease)
		if !was {
			e.term++
			e.log.Info("maintainer: this worker is the leader", "leader_id", e.id, "lease", e.lease.String())
			select {
			case e.elected <- struct{}{}:
			default:
			}
		}
	default:
		if was {
			e.log.Warn("maintainer: lost the leader's lease to another worker", "leader_id", e.id)
		}
		e.leader = false
	}
	return e.leader
}

// Resign gives the lease up, so that another process takes it at its next
// attempt instead of waiting for it to expire.
func (e *Elector) Resign(ctx context.Context) {
	e.mu.Lock()
	was := e.leader
	e.leader = false
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
