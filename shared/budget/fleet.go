package budget

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/shared/fleet"
	"github.com/massgov/bulk-user-import/shared/retry"
)

// How the fleet's rate adapts (see Sync).
const (
	// Increase is the additive increase per second, as a share of the
	// budget (at least MinIncrease): from half the budget back to all of
	// it in 200 s.
	Increase    = 1.0 / 400
	MinIncrease = 0.05
	// After throttling the fleet's rate becomes this share of the rate the
	// service accepted over the last second (its quota, less what others
	// use), but never less than Floor of what it was; at most once per
	// Cooldown.
	BelowAccepted = 0.97
	Floor         = 0.5
	Cooldown      = time.Second
	// A rate never goes below this share of the budget: however the
	// service throttles, the fleet keeps a trickle going.
	MinShare = 0.05
)

// LiveWindow is how recently a worker must have beaten (in the fleet's
// registry) and synced its budgets for its shares to count: three syncs,
// and never less than two of the registry's own heartbeats, since workers
// of versions whose syncs did not beat (before the one registry) beat only
// through it. A worker whose last successful sync started more than
// LiveWindow less one interval ago holds no share: the others stop
// counting it only later.
func LiveWindow(interval time.Duration) time.Duration {
	return max(3*interval, 2*fleet.DefaultHeartbeat)
}

// SyncTimeout bounds a sync's wait for a connection, and then its
// statement: an interval, at least a second (a sync's two waits end well
// within LiveWindow, at least ten seconds).
func SyncTimeout(interval time.Duration) time.Duration {
	return min(max(interval, time.Second), maxSyncTimeout)
}

// maxSyncTimeout bounds a sync whatever the interval (a shorter one only
// makes the hold's arithmetic safer), and stopGrace is what a sync in
// flight when the worker stops gets before it is cancelled: the stop
// sequence stays well within the ECS stop timeout.
const (
	maxSyncTimeout = 5 * time.Second
	stopGrace      = time.Second
)

// DefaultInterval is how often a worker syncs its budgets.
const DefaultInterval = time.Second

// Fleet shares this worker's budgeted limits with the other live workers.
type Fleet struct {
	pool     *pgxpool.Pool
	id       string
	interval time.Duration
	log      *slog.Logger
	limits   []*Limit
	needs    []string // for each limit, this worker's limits of the requests it needs (JSON)
	kick     chan struct{}

	// since is the database's clock just after this worker joined or last
	// became active (nil until it is known): every other live worker that
	// synced later counts it in its split. warming: joined or active again,
	// but not every other live worker has synced since.
	since   *time.Time
	warming atomic.Bool
	syncs   atomic.Int64
	// listening: the connection of its own that listens for the fleet's
	// changes is open.
	listening atomic.Bool
	// ListenName, if set, is the listener's application_name (its
	// connection is otherwise configured as the pool's).
	ListenName string
	mu         sync.Mutex
	failing    bool

	// live is LiveWindow(interval) (tests shorten it).
	live time.Duration
	// unsure: a sync failed after its statement may have been sent, so it
	// may have committed what this worker never applied; its shares are 0
	// and Run retries every tenth of an interval until a sync succeeds.
	unsure bool
	// applied: the database's clock at the sync whose answer this worker
	// last applied (nil: none yet), said at each sync; reportSoon: the
	// last sync lowered a share, so the next one is soon.
	applied    *time.Time
	reportSoon bool
	// appliedStart: the process's clock at the start of that sync.
	appliedStart time.Time
	// notified: another worker joined, left, or became active or idle
	// since the last sync; the sync after the one that follows is soon,
	// so that a worker waiting for this one to apply its share waits
	// little.
	notified atomic.Bool
	// idleUnsaid: a sync that said idle failed; the next one that
	// succeeds idle notifies the others.
	idleUnsaid bool
	// hold guards holdUntil, when this worker's shares expire (zero: none
	// held), and expire, the timer that drops them then.
	hold      sync.Mutex
	holdUntil time.Time
	expire    *time.Timer
	// warmingSince: when this worker last started to warm (Run's, for
	// saying once that it lasts).
	warmingSince time.Time
	warnedWarm   bool

	// Test hooks: beforeQuery and afterQuery run before the sync's
	// statement is sent and after its rows are read; an error fails the
	// sync there.
	beforeQuery, afterQuery func() error

	// Whether this worker has work (Watch; without it, always).
	started      time.Time
	lastReceived func() time.Time
	inFlight     func() int64
	wasActive    bool // as the last successful sync said
}

// IdleAfter is how long a worker with no message in flight must have
// received nothing to be idle: two syncs.
func IdleAfter(interval time.Duration) time.Duration { return 2 * interval }

// Watch tells the fleet whether this worker has work, before Run: it is
// idle when it has no message in flight (inFlight) and has received
// nothing (lastReceived; zero: never) for IdleAfter the interval, nor
// since it started, and no request of it waits for a token. An idle
// worker takes no share of a budget while another live worker has work;
// when it has work again it takes its share as a joining worker does.
func (f *Fleet) Watch(lastReceived func() time.Time, inFlight func() int64) {
	f.lastReceived, f.inFlight = lastReceived, inFlight
}

// active says whether this worker has work now. A request waiting for a
// token always has: a worker throttled to a small share stays active.
func (f *Fleet) active() bool {
	for _, l := range f.limits {
		if l.waiting.Load() > 0 {
			return true
		}
	}
	if f.lastReceived == nil || f.inFlight == nil || f.inFlight() > 0 {
		return true
	}
	last := f.lastReceived()
	if last.Before(f.started) {
		last = f.started
	}
	return time.Since(last) < IdleAfter(f.interval)
}

// NewFleet returns the fleet view of this worker (id) for the limits that
// have a budget; nil when none has. The others are this worker's limits
// of the requests those need (Needs; a kind without a limit is left out or
// nil), recorded for status. interval is how often it syncs
// (DefaultInterval when 0).
func NewFleet(pool *pgxpool.Pool, id string, interval time.Duration, log *slog.Logger, limits ...*Limit) *Fleet {
	if interval <= 0 {
		interval = DefaultInterval
	}
	f := &Fleet{pool: pool, id: id, interval: interval, log: log, kick: make(chan struct{}, 1), started: time.Now(), live: LiveWindow(interval)}
	mine := map[string]Flags{}
	for _, l := range limits {
		if l != nil {
			mine[l.name] = Flags{Budget: l.budget, Cap: l.cap}
		}
	}
	for _, l := range limits {
		if l != nil && l.budget > 0 {
			l.kick = f.Kick
			f.limits = append(f.limits, l)
			needs := map[string]Flags{}
			for _, n := range Needs[l.name] {
				needs[n] = mine[n]
			}
			b, _ := json.Marshal(needs) // cannot fail
			f.needs = append(f.needs, string(b))
		}
	}
	if len(f.limits) == 0 {
		return nil
	}
	return f
}

// Kick asks for a sync now (a throttled request, or one that waits while
// this worker's share is none).
func (f *Fleet) Kick() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// Listening reports whether the connection that listens for the fleet's
// changes is open (false for a nil Fleet: there is none).
func (f *Fleet) Listening() bool { return f != nil && f.listening.Load() }

// Syncs is the number of successful syncs (each one database round trip).
func (f *Fleet) Syncs() int64 { return f.syncs.Load() }

// Channel is the PostgreSQL notification channel on which workers say
// that they joined or left the fleet, or became active or idle: the
// others sync at once.
const Channel = "bulk_import_budget"

// Run syncs every interval, and at once (at most every tenth of an
// interval) when a call is throttled, another worker joins or leaves, or
// this one has work again after it was idle,
// until ctx ends; then it leaves the fleet, so that the others take its
// share. While joining, or becoming active again after it was idle, it
// syncs every tenth of an interval until every other worker has seen it.
func (f *Fleet) Run(ctx context.Context) {
	defer f.leave(ctx)
	lctx, stopListen := context.WithCancel(ctx)
	listening := make(chan struct{})
	go func() { defer close(listening); f.listen(lctx) }()
	defer func() { stopListen(); <-listening }()
	t := time.NewTimer(0)
	defer t.Stop()
	// A worker idle that has work again syncs at once, as a joiner does
	// (once per change: a worker is idle for two syncs at least).
	watch := time.NewTicker(max(f.interval/10, time.Millisecond))
	defer watch.Stop()
	armed := false // idle since the last sync that this watch made
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-f.kick:
		case <-watch.C:
			if f.lastReceived == nil {
				watch.Stop()
				continue
			}
			if !f.active() {
				armed = true
				continue
			}
			if !armed {
				continue
			}
		}
		armed = false
		start := time.Now()
		notified := f.notified.Swap(false)
		// Not cancelled at once when ctx ends: a statement cancelled on
		// its way may still run after leave's delete and count this
		// worker again for the liveness window (the others then wait for
		// it, never over the budget). It gets stopGrace, so that a stop
		// during a database brownout stays within the stop timeout.
		sctx, cancelSync := context.WithCancel(context.WithoutCancel(ctx))
		stopSync := context.AfterFunc(ctx, func() { time.AfterFunc(stopGrace, cancelSync) })
		err := f.Sync(sctx)
		stopSync()
		cancelSync()
		if err == nil && !f.wasActive {
			armed = true // said idle
		}
		f.mu.Lock()
		switch {
		case err != nil && !f.failing && ctx.Err() == nil && f.unsure:
			f.log.Warn("could not sync the fleet's budgets, and the sync may have been recorded: this worker sends no budgeted request until a sync succeeds",
				"err", err, "retry_every", (f.interval / 10).String())
			f.failing = true
		case err != nil && !f.failing && ctx.Err() == nil:
			f.log.Warn("could not sync the fleet's budgets; keeping the last shares until a sync succeeds, for at most the liveness window",
				"err", err, "live_window", f.live.String())
			f.failing = true
		case err == nil && f.failing:
			f.log.Info("fleet budgets synced again")
			f.failing = false
		}
		f.mu.Unlock()
		f.sayWarming()
		// The next periodic sync; a kick waits for the minimum spacing.
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(f.interval / 10))):
		}
		next := f.interval
		if f.warming.Load() || f.unsure || f.reportSoon || notified && err == nil {
			next = f.interval / 10
		}
		t.Reset(time.Until(start.Add(next)))
	}
}

// reconnectRetry spaces listen's connection attempts: 1 s, doubling, at
// most 30 s; a connection that listened starts it again.
var reconnectRetry = retry.Schedule{Initial: time.Second, Max: 30 * time.Second}

// listen keeps a connection of its own (not one of the pool's, which the
// rows need) listening on Channel and kicks a sync at each notification
// from another worker; if the connection fails it connects again (the
// periodic syncs go on meanwhile).
func (f *Fleet) listen(ctx context.Context) {
	waits := reconnectRetry.BackOff()
	for ctx.Err() == nil {
		err := func() error {
			cfg := f.pool.Config().ConnConfig.Copy()
			if f.ListenName != "" {
				cfg.RuntimeParams["application_name"] = f.ListenName
			}
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				return err
			}
			defer func() {
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
				defer cancel()
				_ = conn.Close(cctx)
			}()
			f.listening.Store(true)
			defer f.listening.Store(false)
			if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
				return err
			}
			waits.Reset()
			for {
				n, err := conn.WaitForNotification(ctx)
				if err != nil {
					return err
				}
				if n.Payload != f.id {
					f.notified.Store(true)
					f.Kick()
				}
			}
		}()
		if ctx.Err() != nil {
			return
		}
		wait := waits.NextBackOff()
		f.log.Debug("not listening for the fleet's changes; retrying", "err", err, "retry_in", wait.String())
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

// notify tells the other workers that this one joined or left, or became
// active or idle. It returns the database's clock after its notification
// was sent, so after the sync that preceded it was committed: a sync of
// another worker that starts later sees that one's rows.
func (f *Fleet) notify(ctx context.Context) (time.Time, error) {
	var at time.Time
	if err := f.pool.QueryRow(ctx, "SELECT now() FROM pg_notify($1, $2)", Channel, f.id).Scan(&at); err != nil {
		f.log.Debug("could not notify the fleet", "err", err)
		return at, err
	}
	return at, nil
}

// sayWarming warns once when this worker has waited more than five
// intervals for the others to sync since it joined or became active
// again (it sends nothing meanwhile), and says when that ends.
func (f *Fleet) sayWarming() {
	switch warming := f.warming.Load(); {
	case warming && f.warmingSince.IsZero():
		f.warmingSince = time.Now()
	case warming && !f.warnedWarm && time.Since(f.warmingSince) > 5*f.interval:
		f.log.Warn("this worker has waited for the other live workers to sync before it takes its budget shares for more than five intervals (a live worker whose syncs fail holds it up to the liveness window)",
			"waiting", time.Since(f.warmingSince).Round(time.Millisecond).String(), "live_window", f.live.String())
		f.warnedWarm = true
	case !warming && !f.warmingSince.IsZero():
		if f.warnedWarm {
			f.log.Info("this worker takes its budget shares again", "waited", time.Since(f.warmingSince).Round(time.Millisecond).String())
		}
		f.warmingSince, f.warnedWarm = time.Time{}, false
	}
}

// holdsNothing reports whether every share this worker holds is 0.
func (f *Fleet) holdsNothing() bool {
	for _, l := range f.limits {
		if l.current() > 0 {
			return false
		}
	}
	return true
}

// dropShares sets every limit's share to 0 (none held until a sync sets
// them again).
func (f *Fleet) dropShares() {
	f.hold.Lock()
	defer f.hold.Unlock()
	f.dropSharesLocked()
}

// dropSharesLocked is dropShares with f.hold held.
func (f *Fleet) dropSharesLocked() {
	f.holdUntil = time.Time{}
	for _, l := range f.limits {
		l.setShare(0, l.State())
	}
}

// expireShares drops the shares when the last successful sync is too old
// for the others to count this worker much longer (its timer's).
func (f *Fleet) expireShares() {
	f.hold.Lock()
	defer f.hold.Unlock()
	if f.holdUntil.IsZero() || time.Now().Before(f.holdUntil) {
		return // none held, or a later sync holds them longer
	}
	f.dropSharesLocked()
	f.log.Warn("no fleet budget sync succeeded within the liveness window: this worker sends no budgeted request until one does",
		"live_window", f.live.String())
}

func (f *Fleet) leave(ctx context.Context) {
	f.dropShares()
	f.hold.Lock()
	if f.expire != nil {
		f.expire.Stop()
	}
	f.hold.Unlock()
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := f.pool.Exec(dctx, `DELETE FROM bulk_import_budget_share WHERE worker_id = $1`, f.id); err != nil {
		f.log.Warn("could not leave the fleet's budgets (this worker's share expires in seconds)", "err", err)
		return
	}
	_, _ = f.notify(dctx)
}

// syncSQL, in one round trip: records this worker's live membership,
// budget and accepted rate for each budget; updates each budget's fleet
// rate (the budget in force is the smallest of the live workers' budgets;
// a changed budget applies at once unless the service throttled in the
// last minute; then AIMD:
// on a throttled report, once per cooldown, down to BelowAccepted of the
// fleet's accepted rate but not under Floor of the rate; without
// throttling, up by the additive increase for the time since the last
// update, at most 5 s of it); returns each rate with the number of live
// workers sharing it. The row lock of an UPDATE makes concurrent syncs
// see each other's changes (a second throttled report within the cooldown
// does not lower the rate again).
//
// $1 worker, $2 names, $3 this worker's budgets, $4 accepted rates, $5
// attempts and $6 throttles since the last sync, $7 whole-window flags,
// $8 liveness window (s: a worker counts if it beat and synced within
// it), $9 increase share, $10 minimum increase, $11
// cooldown (s), $12 Floor, $13 BelowAccepted, $14 MinShare, $15 this
// worker's caps, $16 when this worker joined or last became active (the
// others that have not applied a sync since are stale; NULL: every
// other), $17 this
// worker's limits of the requests each needs (JSON), $18 whether this
// worker has work (the other live workers that have are counted, with
// their caps, apart), $19 when the sync whose answer this worker last
// applied ran (NULL: none yet).
const syncSQL = `
WITH beat AS (` + fleet.BeatSQL + `
), input AS (
	SELECT * FROM unnest($2::text[], $3::float8[], $4::float8[], $5::int8[], $6::int8[], $7::bool[], $15::float8[], $17::text[])
		AS t(name, own, accepted, calls, throttles, full_window, cap, needs)
), mine AS (
	INSERT INTO bulk_import_budget_share (name, worker_id, accepted, cap, budget, needs, active, applied_at)
	SELECT name, $1, accepted, cap, own, needs::jsonb, $18, $19::timestamptz FROM input
	ON CONFLICT (name, worker_id) DO UPDATE SET seen_at = now(), accepted = excluded.accepted, cap = excluded.cap,
		budget = excluded.budget, needs = excluded.needs, active = excluded.active, applied_at = excluded.applied_at
), others AS (
	SELECT name, count(*) AS n, sum(accepted) AS accepted, array_agg(cap) AS caps,
		min(budget) FILTER (WHERE budget > 0) AS budget, -- 0: a worker that does not say
		count(*) FILTER (WHERE active) AS active, array_agg(cap) FILTER (WHERE active) AS active_caps,
		-- Idle ones too: when every worker is idle, each holds a share.
		-- Stale: has not applied a sync since (an earlier version's: synced).
		count(*) FILTER (WHERE $16::timestamptz IS NULL OR coalesce(applied_at, seen_at) < $16) AS stale
	FROM bulk_import_budget_share s JOIN bulk_import_worker w USING (worker_id)
	-- Live: beaten, and synced its budgets, within the window (a worker
	-- whose syncs fail holds no share after it).
	WHERE s.worker_id <> $1 AND w.heartbeat_at > now() - $8 * interval '1 second'
		AND s.seen_at > now() - $8 * interval '1 second'
	GROUP BY name
), i AS (
	-- The budget in force: the smallest (least ignores the NULL of no others).
	SELECT input.*, least(input.own, o.budget) AS budget, o.accepted AS others_accepted
	FROM input LEFT JOIN others o USING (name)
), gone AS (
	DELETE FROM bulk_import_budget_share WHERE seen_at < now() - interval '1 hour'
), upd AS (
	UPDATE bulk_import_budget b SET
		budget = i.budget,
		rate = least(i.budget, greatest(i.budget * $14, CASE
			-- A new budget, with no throttling in the last minute: at once.
			WHEN i.budget <> b.budget AND i.throttles = 0 AND coalesce(b.decreased_at < now() - interval '1 minute', true) THEN i.budget
			WHEN i.throttles = 0 THEN
				b.rate + greatest(i.budget * $9, $10) * least(extract(epoch FROM now() - b.updated_at), 5)
			WHEN b.decreased_at > now() - $11 * interval '1 second' THEN b.rate
			WHEN NOT i.full_window THEN b.rate * $12
			ELSE greatest(b.rate * $12, least(b.rate, $13 * (i.accepted + coalesce(i.others_accepted, 0))))
		END)),
		decreased_at = CASE
			WHEN i.throttles > 0 AND NOT coalesce(b.decreased_at > now() - $11 * interval '1 second', false) THEN now()
			ELSE b.decreased_at END,
		updated_at = now(),
		calls = b.calls + i.calls,
		throttles = b.throttles + i.throttles
	FROM i
	WHERE b.name = i.name
	RETURNING b.name, b.budget, b.rate, b.calls, b.throttles, b.decreased_at
), ins AS (
	INSERT INTO bulk_import_budget (name, budget, rate, calls, throttles)
	SELECT name, budget, budget, calls, throttles FROM i
	ON CONFLICT (name) DO NOTHING
	RETURNING name, budget, rate, calls, throttles, decreased_at
)
SELECT r.name, r.budget, r.rate, r.calls, r.throttles, r.decreased_at, 1 + coalesce(o.n, 0), coalesce(o.caps, '{}'),
	coalesce(o.stale, 0), coalesce(o.active, 0), coalesce(o.active_caps, '{}'), now()
FROM (SELECT * FROM upd UNION ALL SELECT * FROM ins) r LEFT JOIN others o USING (name)`

// Sync reports this worker's counts and whether it has work, updates the
// fleet's rates and sets each limit to its share: the fleet's rate split
// between the live workers that have work (fairShare); an idle worker
// takes none, unless every live worker is idle (then they split it as if
// none were). A worker that joins the fleet, or has work again after it
// was idle, takes no share until every other live worker has synced since
// (and so lowered its own share); alone, it starts at once. It notifies
// the others then, so that they sync at once.
//
// A sync waits at most SyncTimeout for a connection, and as long for its
// statement. Whatever a sync may have recorded,
// this worker never holds more than the others count it for: a worker
// becoming idle gives its shares back before it says so; a sync that
// fails after its statement may have been sent (it may have committed)
// drops every share to 0 until a sync succeeds; and the shares of the
// last successful sync expire before the others stop counting this
// worker (LiveWindow).
func (f *Fleet) Sync(ctx context.Context) error {
	active := f.active()
	if f.since != nil && !f.appliedStart.IsZero() && time.Since(f.appliedStart) >= f.live-f.interval {
		// No sync applied for nearly the liveness window: the others may have
		// stopped counting this worker and taken its share. It rejoins.
		f.since = nil
		f.warming.Store(true)
	}
	if active && !f.wasActive && f.since != nil {
		// Active again: the others' shares may count this worker out.
		f.since = nil
		f.warming.Store(true)
	}
	if !active && f.wasActive {
		// Give the shares back before saying idle: once this sync commits
		// the others may take them, whether or not its answer arrives.
		f.dropShares()
	}
	n := len(f.limits)
	names, budgets, accepted := make([]string, n), make([]float64, n), make([]float64, n)
	calls, throttles, full, caps := make([]int64, n), make([]int64, n), make([]bool, n), make([]float64, n)
	for i, l := range f.limits {
		names[i], budgets[i], caps[i] = l.name, l.budget, l.cap
		accepted[i], full[i] = l.accepted()
		calls[i], throttles[i] = l.calls.Swap(0), l.throttles.Swap(0)
	}
	restore := func() { // a failed sync's counts go with the next one
		for i, l := range f.limits {
			l.calls.Add(calls[i])
			l.throttles.Add(throttles[i])
		}
	}
	type synced struct {
		st         State
		caps       []float64 // the other live workers'
		activeCaps []float64 // the other live workers' that have work
		active     int       // other live workers that have work
		stale      int       // other live workers that have not applied a sync since this one joined or became active
		at         time.Time // the database's clock at this sync
	}
	// Before the statement is sent: the others count this worker for
	// LiveWindow after the database's clock at its start, which is later.
	// A connection, then the statement, each within SyncTimeout: a sync
	// ends well before the others stop counting this worker.
	start := time.Now()
	// Holding nothing, whatever this worker applies next is
	// this sync's answer: its seen_at stands in.
	appliedArg := f.applied
	if f.holdsNothing() {
		appliedArg = nil
	}
	got, err := func() ([]synced, error) {
		if f.beforeQuery != nil {
			if err := f.beforeQuery(); err != nil {
				return nil, err
			}
		}
		actx, cancel := context.WithTimeout(ctx, SyncTimeout(f.interval))
		defer cancel()
		// Waiting for a connection sends nothing.
		conn, err := f.pool.Acquire(actx)
		if err != nil {
			return nil, notSentError{err}
		}
		defer conn.Release()
		qctx, cancelQuery := context.WithTimeout(ctx, SyncTimeout(f.interval))
		defer cancelQuery()
		rows, err := conn.Query(qctx, syncSQL, f.id, names, budgets, accepted, calls, throttles, full,
			f.live.Seconds(), Increase, MinIncrease, Cooldown.Seconds(), Floor, BelowAccepted, MinShare, caps, f.since, f.needs, active, appliedArg)
		if err != nil {
			return nil, err
		}
		got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (synced, error) {
			var s synced
			err := r.Scan(&s.st.Name, &s.st.Budget, &s.st.Rate, &s.st.Calls, &s.st.Throttled, &s.st.DecreasedAt, &s.st.Workers, &s.caps, &s.stale,
				&s.active, &s.activeCaps, &s.at)
			return s, err
		})
		if err == nil && f.afterQuery != nil {
			err = f.afterQuery()
		}
		return got, err
	}()
	if err != nil {
		restore()
		if !active && f.wasActive {
			f.idleUnsaid = true
		}
		// It may have committed: as if it had (a worker idle that has work
		// again warms up).
		f.wasActive = active
		if !pgconn.SafeToRetry(err) {
			// Its answer is lost: the others may count this worker out or
			// lower, so it holds nothing until a sync succeeds.
			f.dropShares()
			f.unsure = true
		}
		return fmt.Errorf("sync the fleet's budgets: %w", err)
	}
	f.syncs.Add(1)
	f.unsure = false
	withheld := f.since == nil || f.warming.Load()
	warming, lowered := false, false
	f.hold.Lock()
	// Held until the others may stop counting this worker, less an
	// interval of margin (for a late timer); none if that has passed
	// already (only a stalled process: a sync's waits are bounded well
	// within the window).
	f.holdUntil = start.Add(f.live - f.interval)
	expired := !time.Now().Before(f.holdUntil)
	if f.expire == nil {
		f.expire = time.AfterFunc(time.Until(f.holdUntil), f.expireShares)
	} else {
		f.expire.Reset(time.Until(f.holdUntil))
	}
	for _, s := range got {
		for _, l := range f.limits {
			if l.name != s.st.Name {
				continue
			}
			var share float64
			switch {
			case active:
				share = fairShare(s.st.Rate, append(s.activeCaps, l.cap))
				s.st.Idle = s.st.Workers - 1 - s.active
			case s.active == 0: // every live worker idle: as if none were
				share = fairShare(s.st.Rate, append(s.caps, l.cap))
				s.st.Idle = s.st.Workers
			default:
				s.st.Idle = s.st.Workers - s.active
			}
			if withheld && s.stale > 0 {
				share, warming = 0, true
			}
			if expired {
				share = 0
			}
			if l.cap > 0 {
				share = min(share, l.cap)
			}
			if share < l.current() {
				lowered = true
			}
			l.setShare(share, s.st)
			f.sayBudget(l, s.st.Budget)
		}
	}
	if len(got) > 0 && !expired {
		// Applied: the next sync says so (soon, if it lowered a share: a
		// worker that waits for it to lower its share waits for that).
		f.applied = &got[0].at
		f.appliedStart = start
	}
	f.reportSoon = lowered
	f.hold.Unlock()
	nctx, cancel := context.WithTimeout(ctx, SyncTimeout(f.interval))
	defer cancel()
	switch {
	case f.since == nil && len(got) > 0:
		// Joined, or active again: the others count this worker at their
		// next sync, or at once on the notification; it takes its share
		// when every other one has synced since the notification (sent
		// after this sync was committed). Until it is sent, it waits.
		if at, err := f.notify(nctx); err == nil {
			f.since = &at
		} else {
			warming = true
		}
	case !active && (f.wasActive || f.idleUnsaid):
		// Idle: the others may take its share at once.
		_, err := f.notify(nctx)
		f.idleUnsaid = err != nil
	}
	f.warming.Store(warming)
	f.wasActive = active
	return nil
}

// notSentError is an error of a sync whose statement was not sent.
type notSentError struct{ err error }

func (e notSentError) Error() string     { return e.err.Error() }
func (e notSentError) Unwrap() error     { return e.err }
func (e notSentError) SafeToRetry() bool { return true }

// sayBudget warns, once per change, when the budget in force is not this
// worker's: the live workers' flags disagree, and the smallest applies.
func (f *Fleet) sayBudget(l *Limit, inForce float64) {
	switch {
	case inForce == l.budget && l.warned != 0:
		f.log.Info("the fleet's budget is this worker's again", "budget", l.name, "in_force", inForce)
		l.warned = 0
	case inForce != l.budget && inForce != l.warned:
		f.log.Warn(fmt.Sprintf("the live workers' budgets for %s differ: this worker's is %g/s, the fleet uses the smallest, %g/s", l.name, l.budget, inForce),
			"budget", l.name, "own", l.budget, "in_force", inForce)
		l.warned = inForce
	}
}

// fairShare splits rate between workers with these caps (0: none): a
// worker capped below an even split takes its cap, and the rest is split
// evenly between the others (water-filling). It returns the uncapped
// workers' share; a capped worker takes the smaller of it and its cap.
func fairShare(rate float64, caps []float64) float64 {
	capped := slices.Sorted(slices.Values(slices.DeleteFunc(slices.Clone(caps), func(c float64) bool { return c <= 0 })))
	n := len(caps)
	for _, c := range capped {
		if c >= rate/float64(n) {
			break
		}
		rate -= c
		n--
	}
	if n == 0 {
		return rate
	}
	return rate / float64(n)
}

// Read returns the fleet's budgets in use (synced by a live worker within
// the last within), for status: each with the live workers sharing it
// (and how many of them are idle), their budgets when they differ, and
// what holds it below itself (a limit of the requests each of its requests
// needs, or its own caps, over the live workers that have work, or all of
// them when every one is idle).
func Read(ctx context.Context, pool *pgxpool.Pool, within time.Duration) ([]State, error) {
	rows, err := pool.Query(ctx, `SELECT b.name, b.budget, b.rate, b.calls, b.throttles, b.decreased_at,
			coalesce(s.n, 0), coalesce(s.idle, 0), coalesce(s.budgets, '{}'), coalesce(s.workers, '[]')
		FROM bulk_import_budget b LEFT JOIN LATERAL (
			SELECT count(*) AS n, count(*) FILTER (WHERE NOT s.active) AS idle, array_agg(DISTINCT s.budget ORDER BY s.budget) FILTER (WHERE s.budget > 0) AS budgets,
				-- Each live worker's limits of this budget and of the requests it needs (null: not said).
				-- Only the busy ones share the rate, unless every one is idle.
				CASE WHEN bool_and(s.needs IS NOT NULL) THEN coalesce(
					jsonb_agg(s.needs || jsonb_build_object(b.name, jsonb_build_object('budget', s.budget, 'cap', s.cap))) FILTER (WHERE s.active),
					jsonb_agg(s.needs || jsonb_build_object(b.name, jsonb_build_object('budget', s.budget, 'cap', s.cap)))) END AS workers
			FROM bulk_import_budget_share s JOIN bulk_import_worker w USING (worker_id)
			WHERE s.name = b.name AND w.heartbeat_at > now() - $1 * interval '1 second') s ON true
		WHERE b.updated_at > now() - $1 * interval '1 second' ORDER BY b.name`, within.Seconds())
	if err != nil {
		return nil, fmt.Errorf("read the fleet's budgets: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (State, error) {
		var st State
		var workers []map[string]Flags // none when a live worker did not say
		if err := r.Scan(&st.Name, &st.Budget, &st.Rate, &st.Calls, &st.Throttled, &st.DecreasedAt, &st.Workers, &st.Idle, &st.WorkerBudgets, &workers); err != nil {
			return st, err
		}
		if len(st.WorkerBudgets) < 2 {
			st.WorkerBudgets = nil // they agree
		}
		if b := Bounds(st.Name, workers); len(b) > 0 {
			st.BoundBy = &b[0]
		}
		return st, nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the fleet's budgets: %w", err)
	}
	return out, nil
}
