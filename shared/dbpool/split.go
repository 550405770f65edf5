package dbpool

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// A worker's connections, whatever its concurrency: the rows' bookkeeping
// and registration steps are two short pipelined transactions per row, so
// a few connections serve many messages in flight (they wait for one,
// briefly, rather than each holding its own); the maintainer, the fleet's
// registry and budget syncs have a pool of their own, so that rows never
// starve a heartbeat or a lease renewal.
const (
	// DefaultWorkerConns is what a worker opens at most by default.
	DefaultWorkerConns = 8
	// ControlConns is the pool of the maintainer and the fleet's
	// bookkeeping. The maintainer holds two at most at once (a job's run
	// lock during a re-send and a statement under it; a result file's rows
	// and its claim's renewal); the third is always there for the
	// heartbeats, the leader's lease and the budget syncs, however slow the
	// maintainer's statements are (waiting on a job's lock, say).
	ControlConns = 3
	// MinRowConns is the least the rows get.
	MinRowConns = 2
)

// WorkerConns is how a worker splits its connections.
type WorkerConns struct {
	Rows    int32 // the rows' bookkeeping and registration steps
	Control int32 // the maintainer, the fleet's registry, budget syncs
	Listen  int32 // 1 when a connection listens for the fleet's changes (budgets)
}

// Total is every connection the worker may open.
func (c WorkerConns) Total() int { return int(c.Rows + c.Control + c.Listen) }

// SplitWorkerConns splits total connections (0: DefaultWorkerConns): the
// listener's (when listen), the control pool's, and the rest for the rows.
// flag names the setting in the error when total is too small.
func SplitWorkerConns(total int, listen bool, flag string) (WorkerConns, error) {
	if total == 0 {
		total = DefaultWorkerConns
	}
	c := WorkerConns{Control: ControlConns}
	if listen {
		c.Listen = 1
	}
	least := MinRowConns + c.Total()
	if total < least {
		why := fmt.Sprintf("%d for the rows, %d for the maintainer and the fleet's bookkeeping", MinRowConns, ControlConns)
		if listen {
			why += ", 1 listening for the fleet's budget changes"
		}
		return c, fmt.Errorf("%s %d: want at least %d (%s)", flag, total, least, why)
	}
	c.Rows = int32(total - c.Total())
	return c, nil
}

// Usage is what a process's pools hold, for the fleet's status.
type Usage struct {
	Open  int `json:"open"`   // connections open now
	InUse int `json:"in_use"` // of them, running a statement or transaction now
	Max   int `json:"max"`    // the most the process may open
	// Since the process started: the connections the rows asked for, how
	// many of those asks found none free and waited for another to be
	// released (a new connection being opened is not counted), and how
	// long the asks that did not find one at once waited in all (opening
	// included).
	Acquires int64 `json:"acquires"`
	Waited   int64 `json:"waited"`
	WaitedMS int64 `json:"waited_ms"`
}

// UsageOf adds up the rows' pool, the control pool and the listener
// (listening: its connection is open now) of a worker split as c.
func UsageOf(c WorkerConns, rows, control *pgxpool.Pool, listening bool) Usage {
	r, k := rows.Stat(), control.Stat()
	u := Usage{
		Open:     int(r.TotalConns() + k.TotalConns()),
		InUse:    int(r.AcquiredConns() + k.AcquiredConns()),
		Max:      c.Total(),
		Acquires: r.AcquireCount(),
		Waited:   max(r.EmptyAcquireCount()-r.NewConnsCount(), 0),
		WaitedMS: r.EmptyAcquireWaitTime().Milliseconds(),
	}
	if listening {
		u.Open++ // idle between notifications
	}
	return u
}
