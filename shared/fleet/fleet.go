// Package fleet is the one registry of the workers that are running: each
// worker keeps its row of bulk_import_worker fresh (a heartbeat every few
// seconds, at once when one of its circuit breakers opens or closes; its
// leader election and its budget syncs beat too, in their own statements)
// and deletes it when it stops. Everything that asks whether a worker is
// alive reads that row's heartbeat_at: an operator's status (how many
// workers run, which are paused and why), the fleet budgets (whose shares
// count) and the maintainer's election (a leader leads while its worker's
// heartbeat is younger than the lease).
package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/shared/breaker"
	"github.com/massgov/bulk-user-import/shared/dbpool"
)

// DefaultHeartbeat is how often a worker refreshes its row; a row older
// than LiveWithin belongs to a worker that is gone.
const (
	DefaultHeartbeat = 5 * time.Second
	LiveWithin       = 30 * time.Second
)

// NewID names this process: host, pid and a random part.
func NewID() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
}

// Worker is a running worker, as registered.
type Worker struct {
	ID          string                               `json:"id"`
	StartedAt   time.Time                            `json:"started_at"`
	HeartbeatAt time.Time                            `json:"heartbeat_at"`
	Paused      map[breaker.Dependency]breaker.Fault `json:"paused,omitempty"`
	// Its database connections at its last heartbeat (nil: a worker of a
	// version that did not say).
	Conns *dbpool.Usage `json:"db_conns,omitempty"`
}

// BeatSQL, a statement (or a CTE) with the worker's id as $1, records a
// heartbeat of that worker: the statements of other loops of the worker
// (its election, its budget syncs) carry it, so that any of them keeps
// the worker alive. A heartbeat is the start of its transaction (now()),
// and never moves back: a beat whose transaction started before another's
// committed keeps the later time.
const BeatSQL = `INSERT INTO bulk_import_worker (worker_id) VALUES ($1)
	ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = greatest(bulk_import_worker.heartbeat_at, now())`

// Registration is this process's row.
type Registration struct {
	pool  *pgxpool.Pool
	id    string
	state func() map[breaker.Dependency]breaker.Fault
	log   *slog.Logger
	kick  chan struct{}
	// Conns, if set, gives the worker's database connections at each
	// heartbeat.
	Conns func() dbpool.Usage
}

// Register returns this process's registration under id; state gives its
// open breakers' faults at each heartbeat. Run keeps it fresh.
func Register(pool *pgxpool.Pool, id string, state func() map[breaker.Dependency]breaker.Fault, log *slog.Logger) *Registration {
	return &Registration{pool: pool, id: id, state: state, log: log, kick: make(chan struct{}, 1)}
}

// Changed asks for a heartbeat now (a breaker opened or closed).
func (r *Registration) Changed() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run writes the row every interval (and when Changed) until ctx ends,
// then deletes it.
func (r *Registration) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		// A beat that cannot have a connection or is held up waits no
		// longer than until the next one.
		bctx, cancel := context.WithTimeout(ctx, interval)
		err := r.beat(bctx)
		cancel()
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			r.log.Warn("could not register this worker's heartbeat (status may not list it)", "err", err)
			failing = true
		case err == nil:
			failing = false
		}
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if _, err := r.pool.Exec(dctx, `DELETE FROM bulk_import_worker WHERE worker_id = $1`, r.id); err != nil {
				r.log.Warn("could not deregister this worker (its row expires)", "err", err)
			}
			return
		case <-t.C:
		case <-r.kick:
		}
	}
}

func (r *Registration) beat(ctx context.Context) error {
	paused, err := json.Marshal(r.state())
	if err != nil {
		return err
	}
	var conns *dbpool.Usage
	if r.Conns != nil {
		u := r.Conns()
		conns = &u
	}
	// The rows of workers gone for a day (killed: they could not
	// deregister) go with the beats of the living.
	_, err = r.pool.Exec(ctx, `WITH gone AS (DELETE FROM bulk_import_worker WHERE heartbeat_at < now() - interval '1 day')
		INSERT INTO bulk_import_worker (worker_id, paused, db_conns) VALUES ($1, $2, $3)
		ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = greatest(bulk_import_worker.heartbeat_at, now()), paused = excluded.paused,
			db_conns = excluded.db_conns`, r.id, string(paused), conns)
	return err
}

// Live returns the workers heard from within LiveWithin, oldest first.
func Live(ctx context.Context, pool *pgxpool.Pool) ([]Worker, error) {
	rows, err := pool.Query(ctx, `SELECT worker_id, started_at, heartbeat_at, paused, db_conns FROM bulk_import_worker
		WHERE heartbeat_at > now() - $1 * interval '1 second' ORDER BY started_at, worker_id`, LiveWithin.Seconds())
	if err != nil {
		return nil, fmt.Errorf("read the live workers: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Worker, error) {
		var w Worker
		return w, r.Scan(&w.ID, &w.StartedAt, &w.HeartbeatAt, &w.Paused, &w.Conns)
	})
	if err != nil {
		return nil, fmt.Errorf("read the live workers: %w", err)
	}
	return out, nil
}

// SumConns adds up the database connections of the workers that said, and
// says how many did.
func SumConns(ws []Worker) (sum dbpool.Usage, n int) {
	for _, w := range ws {
		if c := w.Conns; c != nil {
			sum.Open += c.Open
			sum.InUse += c.InUse
			sum.Max += c.Max
			sum.Acquires += c.Acquires
			sum.Waited += c.Waited
			sum.WaitedMS += c.WaitedMS
			n++
		}
	}
	return sum, n
}
