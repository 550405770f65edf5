package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/massgov/bulk-user-import/shared/breaker"
	"github.com/massgov/bulk-user-import/shared/budget"
	"github.com/massgov/bulk-user-import/shared/dbpool"
	"github.com/massgov/bulk-user-import/shared/fleet"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/mask"
	"github.com/massgov/bulk-user-import/shared/split"
	"github.com/massgov/bulk-user-import/shared/textbound"
)

func printSources(w io.Writer, sources []split.SourceResult) {
	for _, s := range sources {
		switch {
		case s.Err != nil:
			fmt.Fprintf(w, "  REFUSED %s\n", mask.Text(s.Err.Error()))
		case s.Skipped:
			fmt.Fprintf(w, "  %s: already recorded, not read again\n", s.Source)
		default:
			c := s.Counts
			fmt.Fprintf(w, "  %s: %d rows: %d accepted, %d rejected, %d duplicate\n", s.Source, c.Rows, c.Accepted, c.Rejected, c.Duplicates)
		}
	}
}

func printDryRun(w io.Writer, res split.DryRunResult) {
	fmt.Fprintln(w, "dry run: nothing recorded, nothing sent")
	printSources(w, res.Sources)
	if len(res.Rejects) > 0 {
		fmt.Fprintln(w, "rejected rows:")
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		for _, r := range res.Rejects {
			fmt.Fprintf(tw, "  %s:%d\t%s\t%s\n", r.Source, r.Line, r.Code, mask.Text(r.Reason))
		}
		tw.Flush()
	}
}

func printRun(w io.Writer, res split.Result) {
	if res.Created {
		fmt.Fprintln(w, "new job")
	} else if len(res.Sources) > 0 {
		fmt.Fprintln(w, "existing job: resuming")
	}
	printSources(w, res.Sources)
	fmt.Fprintf(w, "sent %d messages\n", res.Sent)
}

func printSummary(w io.Writer, st jobs.Status, probs []jobs.Problem) {
	fmt.Fprintf(w, "job %s done: %d rows: %d succeeded, %d failed, %d rejected, %d duplicate, %d cancelled\n",
		st.Job, st.Total, st.Succeeded, st.Failed, st.Rejected, st.Duplicate, st.Cancelled)
	if st.CancelledAt != nil {
		fmt.Fprintf(w, "the job was cancelled: %s\n", st.CancelReason) // masked by jobs
	}
	fmt.Fprintf(w, "result files: %s\n", resultsLine(st))
	if st.PrunedAt != nil {
		fmt.Fprintf(w, "the rows' data was deleted %s (retention): only the counts are kept\n", stamp(*st.PrunedAt))
	}
	if len(probs) == 0 {
		return
	}
	fmt.Fprintln(w, "failed, rejected and cancelled rows:")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, p := range probs {
		fmt.Fprintf(tw, "  %s:%d\t%s\t%s\t%s\n", p.Source, p.Line, p.State, p.Code, mask.Text(p.Message))
	}
	tw.Flush()
	if more := st.Failed + st.Rejected + st.Cancelled - int64(len(probs)); more > 0 {
		fmt.Fprintf(w, "  … and %d more\n", more)
	}
}

// fleetState is where the workers stand: which one's maintainer leads,
// and which are paused.
type fleetState struct {
	Maintainer struct {
		ID   string `json:"leader,omitempty"` // host/pid/random of the worker holding the lease
		Live bool   `json:"live"`             // its lease has not expired
	} `json:"maintainer"`
	Workers []fleet.Worker `json:"workers"` // heard from in the last 30 s
	// The fleet budgets in use (synced by a live worker lately).
	Budgets []budget.State `json:"budgets,omitempty"`
	// The database connections of the live workers, and the server's.
	Database *dbState `json:"database,omitempty"`
}

// dbState is what the live workers hold of the database's connections
// (added up from their heartbeats) and what the server allows.
type dbState struct {
	Workers    int `json:"workers"`    // live workers that said
	Unreported int `json:"unreported"` // live workers that did not (older versions): not counted
	dbpool.Usage
	// The server: max_connections, the connections reserved for
	// superusers, and the client connections open now (this command's
	// own left out); 0 when they could not be read.
	ServerMax      int `json:"server_max_connections"`
	ServerReserved int `json:"server_reserved"`
	ServerOpen     int `json:"server_open"`
}

func printStatus(w io.Writer, st jobs.Status, d jobs.Details, fl fleetState, now time.Time) {
	force := "no"
	if st.ForceRegistration {
		force = "yes"
	}
	fmt.Fprintf(w, "job %s (created %s, force registration: %s)\n", st.Job, stamp(st.CreatedAt), force)
	if st.CancelledAt != nil {
		fmt.Fprintf(w, "CANCELLED %s: %s\n", stamp(*st.CancelledAt), st.CancelReason) // masked by jobs
	}
	switch {
	case st.Done:
		fmt.Fprintf(w, "done %s: every row is final and the job's completion is recorded\n", stamp(*st.FinishedAt))
		fmt.Fprintf(w, "result files: %s\n", resultsLine(st))
		fmt.Fprintf(w, "completion event: %s\n", eventLine(st))
	case !st.Recorded:
		fmt.Fprintf(w, "not every source of the job is recorded (a splitter run stopped): run the splitter again with --job %s and the same sources\n", st.Job)
	case st.Total > 0 && st.Queued == 0:
		fmt.Fprintln(w, "every row is final; the job's completion is not recorded yet (a worker's maintainer records it within seconds: is a worker running?)")
	}
	if st.PrunedAt != nil {
		fmt.Fprintf(w, "the rows' data was deleted %s (retention): only the counts are kept\n", stamp(*st.PrunedAt))
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "  total\t%d\t\n", st.Total)
	fmt.Fprintf(tw, "  queued\t%d\t(%d not yet sent)\n", st.Queued, st.Unsent)
	fmt.Fprintf(tw, "  succeeded\t%d\t\n", st.Succeeded)
	fmt.Fprintf(tw, "  failed\t%d\t\n", st.Failed)
	fmt.Fprintf(tw, "  rejected\t%d\t\n", st.Rejected)
	fmt.Fprintf(tw, "  duplicate\t%d\t\n", st.Duplicate)
	fmt.Fprintf(tw, "  cancelled\t%d\t\n", st.Cancelled)
	tw.Flush()
	if len(d.FailuresByCode) > 0 {
		fmt.Fprintln(w, "failures by code:")
		codes := slices.Sorted(maps.Keys(d.FailuresByCode))
		slices.SortStableFunc(codes, func(a, b string) int { return int(d.FailuresByCode[b] - d.FailuresByCode[a]) })
		for _, c := range codes {
			fmt.Fprintf(w, "  %-26s %d\n", c, d.FailuresByCode[c])
		}
	}
	if d.OldestQueued != nil {
		fmt.Fprintf(w, "oldest queued row waiting for %s\n", now.Sub(*d.OldestQueued).Round(time.Second))
	}
	fmt.Fprintf(w, "rate over the last %s: %.1f rows/s\n", jobs.RecentWindow, d.RecentPerSecond)
	printFleet(w, fl, now)
}

// printFleet says how many workers run, which are paused and why, and
// which one's maintainer leads.
func printFleet(w io.Writer, fl fleetState, now time.Time) {
	paused := map[breaker.Dependency][]breaker.Fault{}
	npaused := 0
	for _, wk := range fl.Workers {
		if len(wk.Paused) > 0 {
			npaused++
		}
		for d, f := range wk.Paused {
			paused[d] = append(paused[d], f)
		}
	}
	switch {
	case len(fl.Workers) == 0:
		fmt.Fprintln(w, "workers: none running (none heard from in the last 30 s)")
	case npaused == 0:
		fmt.Fprintf(w, "workers: %d running\n", len(fl.Workers))
	default:
		fmt.Fprintf(w, "workers: %d running, %d PAUSED:\n", len(fl.Workers), npaused)
		for _, d := range slices.Sorted(maps.Keys(paused)) {
			fs := paused[d]
			f := fs[0]
			fmt.Fprintf(w, "  %s refuses the pipeline (%d workers) since %s: %s %s\n    fix: %s\n",
				d, len(fs), now.Sub(f.Since).Round(time.Second), f.Code, textbound.OneLine(mask.Text(f.Error), 200), f.Fix)
		}
	}
	if len(fl.Budgets) > 0 {
		fmt.Fprintln(w, "fleet budgets (requests per second for all workers together):")
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		for _, b := range fl.Budgets {
			cur := fmt.Sprintf("now %.1f", b.Rate)
			if b.Rate < b.Budget && b.DecreasedAt != nil {
				cur += fmt.Sprintf(" (lowered after throttling %s ago)", now.Sub(*b.DecreasedAt).Round(time.Second))
			}
			fmt.Fprintf(tw, "  %s\tbudget %g\t%s\t%s\t%d calls, %d throttled\n", b.Name, b.Budget, cur, sharing(b), b.Calls, b.Throttled)
		}
		tw.Flush()
		for _, b := range fl.Budgets {
			if len(b.WorkerBudgets) > 1 {
				fmt.Fprintf(w, "  %s: the live workers' budgets differ (%s): the smallest, %g, is in force\n", b.Name, joinRates(b.WorkerBudgets), b.Budget)
			}
			if b.BoundBy != nil {
				fmt.Fprintf(w, "  %s: %s\n", b.Name, b.BoundBy.Text(b.Name, "the live workers"))
			}
		}
	}
	printConns(w, fl.Database)
	if fl.Maintainer.Live {
		fmt.Fprintf(w, "maintainer: the leader is the worker %s\n", fl.Maintainer.ID)
	} else {
		fmt.Fprintln(w, "maintainer: no worker holds the leader's lease (no worker is running, or a new leader is being elected)")
	}
}

// printConns says how many connections the live workers hold, whether
// their rows wait for one, and whether the server has room for what they
// may open.
func printConns(w io.Writer, d *dbState) {
	if d == nil || d.Workers+d.Unreported == 0 {
		return
	}
	if d.Workers == 0 {
		fmt.Fprintf(w, "database connections: the %d live workers (of an older version) do not say what they hold\n", d.Unreported)
		return
	}
	fmt.Fprintf(w, "database connections: %d workers hold %d (%d in use) of the %d they may open (--db-max-conns each)", d.Workers, d.Open, d.InUse, d.Max)
	if d.ServerMax > 0 {
		fmt.Fprintf(w, "; the server has %d open of max_connections %d (%d reserved)", d.ServerOpen, d.ServerMax, d.ServerReserved)
	}
	fmt.Fprintln(w)
	if d.Unreported > 0 {
		fmt.Fprintf(w, "  %d more live workers (of an older version) do not say what they hold: not counted above\n", d.Unreported)
	}
	if d.ServerMax > 0 {
		others := max(d.ServerOpen-d.Open, 0)
		if room := d.ServerMax - d.ServerReserved - others; d.Max > room {
			fmt.Fprintf(w, "  the workers may open %d, more than the %d the server has for them (max_connections %d, %d reserved, %d others'): "+
				"at their peak the server refuses them (too many clients); lower --db-max-conns or run fewer workers\n", d.Max, room, d.ServerMax, d.ServerReserved, others)
		}
	}
	// Waiting is the design (many messages, few connections); a long
	// wait per ask says the database, or the pool, is what paces the rows.
	if perAsk := float64(d.WaitedMS) / float64(max(d.Acquires, 1)); d.Acquires >= minAsks && perAsk >= longWaitMS {
		fmt.Fprintf(w, "  the rows waited %.0f ms per connection ask on average since their workers started (%.0f%% of %d asks found none free): "+
			"the database is what paces them; if its CPU and connections have room, a higher --db-max-conns may help\n",
			perAsk, 100*float64(d.Waited)/float64(d.Acquires), d.Acquires)
	}
}

// The rows' wait for a connection status speaks of: over this many asks,
// this long on average.
const (
	minAsks    = 100
	longWaitMS = 20.0
)

// sharing says how the live workers share a budget: "4 workers, 10.00
// each", or, when some are idle (they give their shares to the others),
// "4 workers: 3 active, 13.33 each; 1 idle".
func sharing(b budget.State) string {
	active := b.Workers - b.Idle
	switch {
	case b.Workers == 0:
		return fmt.Sprintf("0 workers, %.2f each", b.Rate)
	case b.Idle == 0 || active == 0: // none idle, or all: an even split
		s := fmt.Sprintf("%d workers, %.2f each", b.Workers, b.Rate/float64(b.Workers))
		if b.Idle > 0 {
			s += " (all idle)"
		}
		return s
	default:
		return fmt.Sprintf("%d workers: %d active, %.2f each; %d idle", b.Workers, active, b.Rate/float64(active), b.Idle)
	}
}

// joinRates lists rates: "20, 40".
func joinRates(rates []float64) string {
	s := make([]string, len(rates))
	for i, r := range rates {
		s[i] = fmt.Sprintf("%g", r)
	}
	return strings.Join(s, ", ")
}

func printJobs(w io.Writer, list []jobs.Status) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tCREATED\tSTATE\tTOTAL\tQUEUED\tSUCCEEDED\tFAILED\tREJECTED\tDUPLICATE\tCANCELLED")
	for _, st := range list {
		state := "running"
		switch {
		case st.CancelledAt != nil:
			state = "cancelled"
		case st.PrunedAt != nil:
			state = "pruned"
		case st.Done:
			state = "done"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", st.Job, st.CreatedAt.UTC().Format("2006-01-02 15:04Z"), state,
			st.Total, st.Queued, st.Succeeded, st.Failed, st.Rejected, st.Duplicate, st.Cancelled)
	}
	tw.Flush()
}

// resultsLine says what became of a done job's result files.
func resultsLine(st jobs.Status) string {
	switch st.Results {
	case jobs.ResultsWritten:
		at := "(time unknown)"
		if st.ResultsWrittenAt != nil {
			at = stamp(*st.ResultsWrittenAt)
		}
		return fmt.Sprintf("written %s to %s", at, st.ResultsLocation)
	case jobs.ResultsRetrying:
		return fmt.Sprintf("not written yet: %s (a worker's maintainer retries; see splitter status %s)", st.ResultsError, st.Job)
	case jobs.ResultsNotWritten:
		return fmt.Sprintf("not written: %s; splitter report %s --out DIR writes them locally", st.ResultsError, st.Job)
	case jobs.ResultsPending:
		return "being written by a worker's maintainer"
	}
	return "none yet: the job is not done"
}

// eventLine says what became of a done job's completion event.
func eventLine(st jobs.Status) string {
	switch st.Event {
	case jobs.EventSent:
		at := "(time unknown)"
		if st.EventSentAt != nil {
			at = stamp(*st.EventSentAt)
		}
		return fmt.Sprintf("%s sent %s", st.EventID, at)
	case jobs.EventSkipped:
		return fmt.Sprintf("%s skipped: no destination configured (worker --completion-sns-topic, --completion-event-bus)", st.EventID)
	case jobs.EventFailing:
		next := ""
		if st.EventRetryAt != nil {
			next = ", next try " + stamp(*st.EventRetryAt)
		}
		return fmt.Sprintf("%s not sent yet: %d failed attempts, last: %s (a worker's maintainer retries%s)",
			st.EventID, st.EventFailures, textbound.OneLine(st.EventError, 300), next)
	case jobs.EventPending:
		return fmt.Sprintf("%s being published by a worker's maintainer (after the result files)", st.EventID)
	}
	return "none yet: the job is not done"
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") }
