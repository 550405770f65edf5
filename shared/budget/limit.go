// Package budget paces the requests a worker sends to a rate-limited
// service (Cognito's operations, FINEOS) and shares a budget, in requests
// per second for the whole fleet, between the live workers through
// PostgreSQL. The fleet's rate adapts to the service's real quota: lowered
// when it throttles, raised additively back towards the budget (AIMD).
package budget

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Names of the budgets.
const (
	CognitoGet      = "cognito_get"      // AdminGetUser
	CognitoCreate   = "cognito_create"   // AdminCreateUser
	CognitoPassword = "cognito_password" // AdminSetUserPassword
	Fineos          = "fineos"           // FINEOS provisioning calls
)

// window is how far back a limit's accepted rate is measured.
const (
	window  = time.Second
	buckets = 10
)

// A Limit paces one kind of request of this worker: a caller waits for a
// token before each attempt (retries included), and tokens are handed out
// evenly at the limit's rate, which may change at any moment and applies
// at once (no token is reserved ahead). Without a fleet budget the rate is
// the per-worker cap; with one, the Fleet sets it at each sync to this
// worker's share of the fleet's rate, never above the cap. A nil *Limit
// does not pace.
type Limit struct {
	name   string
	budget float64 // requests per second for the fleet, as this worker's flag says (the smallest of the live workers' applies); 0: none
	cap    float64 // requests per second for this worker; 0: none

	tokens  chan struct{}
	changed chan struct{}
	stop    chan struct{}
	stopped sync.Once
	started time.Time

	mu     sync.Mutex
	rate   float64 // requests per second now; 0: closed (joining the fleet)
	fleet  State   // as of the last sync
	recent [buckets]struct {
		slot             int64
		calls, throttles int64
	}

	// Since the last sync (reported then), and since the start.
	calls, throttles           atomic.Int64
	callsTotal, throttledTotal atomic.Int64
	waiting                    atomic.Int64  // callers waiting for a token now
	kick                       func()        // asks the fleet for a sync now
	warned                     float64       // the fleet's budget, when it is not this one's and was said (Sync's alone)
	onShare                    func(float64) // a test's: sees each share as it applies (under mu)
}

// New returns the limit of one kind of request: budget is the fleet's
// (requests per second for all workers; 0: none) and cap this worker's
// most (0: none). With neither it returns nil: no pacing. Close stops it.
func New(name string, budget, cap float64) *Limit {
	if budget <= 0 && cap <= 0 {
		return nil
	}
	l := &Limit{
		name: name, budget: max(budget, 0), cap: max(cap, 0),
		tokens: make(chan struct{}), changed: make(chan struct{}, 1), stop: make(chan struct{}),
		started: time.Now(),
	}
	if l.budget == 0 {
		l.rate = l.cap
	}
	// With a budget the limit stays closed until the fleet's first sync.
	go l.dispense()
	return l
}

// Name is the budget's name.
func (l *Limit) Name() string { return l.name }

// Budgeted says whether the limit shares a fleet budget.
func (l *Limit) Budgeted() bool { return l != nil && l.budget > 0 }

// Close stops handing out tokens; waiting callers wait for their context.
func (l *Limit) Close() {
	if l != nil {
		l.stopped.Do(func() { close(l.stop) })
	}
}

// Wait waits for this attempt's token.
func (l *Limit) Wait(ctx context.Context) error {
	if l == nil {
		return nil
	}
	l.waiting.Add(1)
	defer l.waiting.Add(-1)
	if l.kick != nil && l.current() <= 0 {
		// No share (idle, or joining): this worker has work, say so now.
		l.kick()
	}
	select {
	case <-l.tokens:
		l.calls.Add(1)
		l.callsTotal.Add(1)
		l.note(false)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Throttled records that an attempt was throttled by the service (it was
// counted by Wait): with a fleet budget, the fleet syncs at once and
// lowers its rate.
func (l *Limit) Throttled() {
	if l == nil {
		return
	}
	l.throttles.Add(1)
	l.throttledTotal.Add(1)
	l.note(true)
	if l.kick != nil {
		l.kick()
	}
}

// note counts an attempt, or a throttle, in the window's current bucket.
func (l *Limit) note(throttled bool) {
	slot := slotAt(time.Since(l.started))
	l.mu.Lock()
	defer l.mu.Unlock()
	b := &l.recent[slot%buckets]
	if b.slot != slot {
		b.slot, b.calls, b.throttles = slot, 0, 0
	}
	if throttled {
		b.throttles++
	} else {
		b.calls++
	}
}

// slot is the window bucket's number at this age of the limit.
func slotAt(age time.Duration) int64 { return age.Nanoseconds() / int64(window/buckets) }

// accepted is the rate of attempts that were not throttled over the last
// window (or since the start, when younger), and whether a whole window
// of data backs it.
func (l *Limit) accepted() (perSecond float64, full bool) {
	age := time.Since(l.started)
	slot := slotAt(age)
	l.mu.Lock()
	defer l.mu.Unlock()
	var calls, throttles int64
	for _, b := range l.recent {
		if b.slot > slot-buckets && b.slot <= slot {
			calls += b.calls
			throttles += b.throttles
		}
	}
	span := min(age, window).Seconds()
	if span <= 0 {
		return 0, false
	}
	return float64(max(calls-throttles, 0)) / span, age >= window
}

// setShare makes the limit hand out share requests per second (capped); 0
// closes it.
func (l *Limit) setShare(share float64, st State) {
	l.mu.Lock()
	if l.cap > 0 {
		share = min(share, l.cap)
	}
	changed := share != l.rate
	l.rate = share
	if l.onShare != nil {
		l.onShare(share)
	}
	st.Share, st.Cap = share, l.cap
	l.fleet = st
	l.mu.Unlock()
	if changed {
		select {
		case l.changed <- struct{}{}:
		default:
		}
	}
}

func (l *Limit) current() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rate
}

// dispense hands out one token at a time, 1/rate apart; a changed rate
// applies to the next token.
func (l *Limit) dispense() {
	var timer *time.Timer
	for {
		for l.current() <= 0 {
			select {
			case <-l.changed:
			case <-l.stop:
				return
			}
		}
		select {
		case l.tokens <- struct{}{}:
		case <-l.changed:
			continue // closed meanwhile, perhaps
		case <-l.stop:
			return
		}
		last := time.Now()
		for {
			r := l.current()
			var wait time.Duration
			if r > 0 {
				wait = time.Until(last.Add(time.Duration(float64(time.Second) / r)))
				if wait <= 0 {
					break
				}
			} else {
				wait = math.MaxInt64
			}
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			select {
			case <-timer.C:
			case <-l.changed:
				timer.Stop()
			case <-l.stop:
				timer.Stop()
				return
			}
		}
	}
}

// State is where a budget stands.
type State struct {
	Name      string  `json:"name"`
	Budget    float64 `json:"budget"`          // requests per second for the fleet: the smallest of the live workers' budgets
	Rate      float64 `json:"fleet_rate"`      // what the fleet may send now: the budget, or less after throttling
	Workers   int     `json:"workers"`         // live workers sharing it
	Idle      int     `json:"idle,omitempty"`  // of which idle (no work: no share while another has work)
	Share     float64 `json:"share,omitempty"` // this worker's rate now (a worker's view only)
	Cap       float64 `json:"cap,omitempty"`   // this worker's cap (a worker's view only)
	Calls     int64   `json:"calls"`           // attempts (this worker's since its start, or the fleet's)
	Throttled int64   `json:"throttled"`       // of which throttled by the service
	// When the fleet last lowered its rate after throttling.
	DecreasedAt *time.Time `json:"decreased_at,omitempty"`
	// The live workers' own budgets, when they differ (status only): the
	// smallest is in force.
	WorkerBudgets []float64 `json:"worker_budgets,omitempty"`
	// What holds the fleet below the budget, when a limit of the requests
	// each of its requests needs does, or the live workers' own caps of it
	// (status only): the lowest such.
	BoundBy *Bound `json:"bound_by,omitempty"`
}

// State is the limit's state as of the fleet's last sync, with this
// worker's counts; without a budget, just the cap.
func (l *Limit) State() State {
	l.mu.Lock()
	st := l.fleet
	if l.budget == 0 {
		st = State{Share: l.rate, Cap: l.cap}
	}
	l.mu.Unlock()
	st.Name = l.name
	st.Calls, st.Throttled = l.callsTotal.Load(), l.throttledTotal.Load()
	return st
}
