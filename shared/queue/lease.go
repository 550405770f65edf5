package queue

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/massgov/bulk-user-import/shared/clock"
)

// Visibility is what Leases needs of a queue.
type Visibility interface {
	ChangeVisibilityBatch(ctx context.Context, receiptHandles []string, d time.Duration) ([]EntryError, error)
}

var _ Visibility = (*Queue)(nil)

// Leases keeps received messages hidden while they are worked on: Run
// extends, in batches of ten, the visibility of every held message that
// was not extended for half of Interval, to Visibility. Hold a message
// when it is received; End its lease before it is deleted, released or
// delayed: End waits for an extension in flight, so that a late extension
// never hides a released message again. The worker loop and the DLQ tools
// both hold their messages this way.
type Leases struct {
	q          Visibility
	visibility time.Duration
	interval   time.Duration
	log        *slog.Logger
	// OnExtend, if set, hears how many leases each extension renewed.
	OnExtend func(n int)
	// Clock times the extensions (nil: the system's clock). Set it before
	// the first Hold.
	Clock clock.Clock

	mu   sync.Mutex
	held map[string]*lease // by the caller's key
}

type lease struct {
	mu         sync.Mutex // held while an extension that includes it is in flight
	handle     string
	ended      bool
	extendedAt time.Time
}

// NewLeases returns leases on q: messages are hidden for visibility, and
// their visibility is extended every interval.
func NewLeases(q Visibility, visibility, interval time.Duration, log *slog.Logger) *Leases {
	return &Leases{q: q, visibility: visibility, interval: interval, log: log, held: map[string]*lease{}}
}

// Hold starts (or, for a message received again, renews with its new
// receipt handle) the lease of the message named key.
func (l *Leases) Hold(key, handle string) {
	l.mu.Lock()
	old := l.held[key]
	l.held[key] = &lease{handle: handle, extendedAt: clock.OrReal(l.Clock).Now()}
	l.mu.Unlock()
	if old != nil {
		old.end()
	}
}

// End stops extending the message's lease and returns its receipt handle
// (ok false when it is not held). When it returns, no extension of it is
// in flight.
func (l *Leases) End(key string) (handle string, ok bool) {
	l.mu.Lock()
	ls := l.held[key]
	delete(l.held, key)
	l.mu.Unlock()
	if ls == nil {
		return "", false
	}
	ls.end()
	return ls.handle, true
}

func (ls *lease) end() {
	ls.mu.Lock()
	ls.ended = true
	ls.mu.Unlock()
}

// Len is the number of leases held.
func (l *Leases) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.held)
}

// Run extends the leases every interval until ctx ends.
func (l *Leases) Run(ctx context.Context) {
	clk := clock.OrReal(l.Clock)
	tick := clk.NewTicker(l.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C():
		}
		due := clk.Now().Add(-l.interval / 2)
		l.mu.Lock()
		var batch []*lease
		for _, ls := range l.held {
			if ls.extendedAt.Before(due) {
				batch = append(batch, ls)
			}
		}
		l.mu.Unlock()
		l.each(ctx, batch, l.extend)
	}
}

// ReleaseAll ends every lease and makes the messages visible at once. Call
// it after Run has returned.
func (l *Leases) ReleaseAll(ctx context.Context) {
	l.mu.Lock()
	all := make([]*lease, 0, len(l.held))
	for _, ls := range l.held {
		all = append(all, ls)
	}
	clear(l.held)
	l.mu.Unlock()
	for _, ls := range all {
		ls.end()
	}
	l.each(ctx, all, func(ctx context.Context, batch []*lease) {
		handles := make([]string, len(batch))
		for i, ls := range batch {
			handles[i] = ls.handle
		}
		if _, err := l.q.ChangeVisibilityBatch(ctx, handles, 0); err != nil && !errors.Is(err, context.Canceled) {
			l.log.Warn("could not release held messages; they reappear when their visibility ends", "count", len(handles), "err", err)
		}
	})
}

// each calls fn on batches of at most ten leases, eight batches at once.
func (l *Leases) each(ctx context.Context, all []*lease, fn func(context.Context, []*lease)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for len(all) > 0 {
		n := min(len(all), MaxBatchEntries)
		batch := all[:n]
		all = all[n:]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(ctx, batch)
		})
	}
	wg.Wait()
}

// extend renews a batch of leases. Each lease stays locked until its
// extension is answered, so that End waits for it.
func (l *Leases) extend(ctx context.Context, batch []*lease) {
	var live []*lease
	for _, ls := range batch {
		ls.mu.Lock()
		if ls.ended {
			ls.mu.Unlock()
			continue
		}
		live = append(live, ls)
	}
	defer func() {
		for _, ls := range live {
			ls.mu.Unlock()
		}
	}()
	if len(live) == 0 {
		return
	}
	handles := make([]string, len(live))
	for i, ls := range live {
		handles[i] = ls.handle
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	failed, err := l.q.ChangeVisibilityBatch(cctx, handles, l.visibility)
	if err != nil {
		if ctx.Err() == nil {
			l.log.Warn("could not extend the visibility of held messages; another process may take them (harmless: every step is idempotent)", "count", len(live), "err", err)
		}
		return
	}
	bad := map[string]bool{}
	for _, f := range failed {
		bad[f.ID] = true
		l.log.Warn("could not extend a message's visibility", "code", f.Code, "err", f.Message)
	}
	now := clock.OrReal(l.Clock).Now()
	n := 0
	for i, ls := range live {
		if !bad[strconv.Itoa(i)] {
			ls.extendedAt = now
			n++
		}
	}
	if l.OnExtend != nil && n > 0 {
		l.OnExtend(n)
	}
}
