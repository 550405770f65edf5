// Package metrics counts what a worker does and exposes the counts for
// graphing: in the Prometheus text format over HTTP, and as CloudWatch
// embedded metric format (EMF) lines, which CloudWatch Logs turns into
// metrics when the worker's output goes there (as under ECS).
package metrics

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/massgov/bulk-user-import/shared/budget"
)

// Namespace of the CloudWatch metrics.
const Namespace = "BulkUserImport"

// Worker holds one worker process's counters. The zero value is ready.
type Worker struct {
	Received   atomic.Int64 // messages received
	Succeeded  atomic.Int64 // rows registered
	Failed     atomic.Int64 // rows failed for good (sent to the DLQ)
	Skipped    atomic.Int64 // messages of rows already final
	Retried    atomic.Int64 // attempts that will be retried
	Released   atomic.Int64 // messages handed back unfinished at shutdown
	Paused     atomic.Int64 // messages handed back untouched: a dependency's breaker was open
	Heartbeats atomic.Int64 // visibility extensions
	InFlight   atomic.Int64 // messages being handled now
	// LastReceived is when a message was last received (Unix nanoseconds;
	// 0: never): with InFlight, whether the worker is idle.
	LastReceived atomic.Int64

	// The maintainer's work, counted by the worker that was leader.
	Leader         atomic.Int64 // 1 while this worker's maintainer is the leader
	JobsCompleted  atomic.Int64 // completions recorded
	JobsCancelled  atomic.Int64 // jobs cancelled by their failure limits
	ResultsWritten atomic.Int64 // result files written (one set per completion)
	ResultsFailed  atomic.Int64 // failed writes of result files (retried)
	RowsResent     atomic.Int64 // messages re-sent for rows whose message was lost
	// Completion events by outcome.
	EventsPublished, EventsSkipped, EventsFailed atomic.Int64
	RowsPruned                                   atomic.Int64 // rows whose data retention deleted

	// Budgets, when set, gives the request limits' states (fleet budgets
	// and per-worker caps).
	Budgets func() []budget.State
	// BudgetSyncs, when set, counts the fleet budgets' syncs (one database
	// round trip each).
	BudgetSyncs func() int64

	mu       sync.Mutex
	errors   map[string]int64 // failures (final or not) by error code
	steps    map[string]*step
	breakers map[string]bool // dependency -> its breaker is open
}

// LastReceive is when a message was last received (zero: never).
func (m *Worker) LastReceive() time.Time {
	if n := m.LastReceived.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Breaker records whether the breaker of a dependency is open.
func (m *Worker) Breaker(dependency string, open bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.breakers == nil {
		m.breakers = map[string]bool{}
	}
	m.breakers[dependency] = open
}

type step struct {
	count, errors int64
	seconds       float64
}

// Error counts a failure with its code.
func (m *Worker) Error(code string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.errors == nil {
		m.errors = map[string]int64{}
	}
	m.errors[code]++
}

// Step records one call of a registration step.
func (m *Worker) Step(name string, took time.Duration, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.steps == nil {
		m.steps = map[string]*step{}
	}
	s := m.steps[name]
	if s == nil {
		s = &step{}
		m.steps[name] = s
	}
	s.count++
	s.seconds += took.Seconds()
	if err != nil {
		s.errors++
	}
}

// Snapshot is the counters at one moment.
type Snapshot struct {
	At                                                                          time.Time
	Received, Succeeded, Failed, Skipped, Retried, Released, Paused, Heartbeats int64
	InFlight                                                                    int64
	Leader, JobsCompleted, JobsCancelled, ResultsWritten, ResultsFailed         int64
	RowsResent, RowsPruned                                                      int64
	EventsPublished, EventsSkipped, EventsFailed                                int64
	Errors                                                                      map[string]int64
	StepCalls, StepErrors                                                       map[string]int64
	StepSeconds                                                                 map[string]float64
	BreakerOpen                                                                 map[string]bool
	Budgets                                                                     []budget.State
	BudgetSyncs                                                                 int64
}

// Snapshot reads every counter.
func (m *Worker) Snapshot(now time.Time) Snapshot {
	s := Snapshot{
		At: now, Received: m.Received.Load(), Succeeded: m.Succeeded.Load(), Failed: m.Failed.Load(),
		Skipped: m.Skipped.Load(), Retried: m.Retried.Load(), Released: m.Released.Load(), Paused: m.Paused.Load(),
		Heartbeats: m.Heartbeats.Load(), InFlight: m.InFlight.Load(),
		Leader: m.Leader.Load(), JobsCompleted: m.JobsCompleted.Load(), JobsCancelled: m.JobsCancelled.Load(),
		ResultsWritten: m.ResultsWritten.Load(), ResultsFailed: m.ResultsFailed.Load(),
		RowsResent: m.RowsResent.Load(), RowsPruned: m.RowsPruned.Load(),
		EventsPublished: m.EventsPublished.Load(), EventsSkipped: m.EventsSkipped.Load(), EventsFailed: m.EventsFailed.Load(),
		Errors: map[string]int64{}, StepCalls: map[string]int64{}, StepErrors: map[string]int64{}, StepSeconds: map[string]float64{},
		BreakerOpen: map[string]bool{},
	}
	if m.Budgets != nil {
		s.Budgets = m.Budgets()
	}
	if m.BudgetSyncs != nil {
		s.BudgetSyncs = m.BudgetSyncs()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	maps.Copy(s.Errors, m.errors)
	maps.Copy(s.BreakerOpen, m.breakers)
	for name, st := range m.steps {
		s.StepCalls[name], s.StepErrors[name], s.StepSeconds[name] = st.count, st.errors, st.seconds
	}
	return s
}

// BreakersOpen is the number of dependencies whose breaker is open.
func (s Snapshot) BreakersOpen() int64 {
	var n int64
	for _, open := range s.BreakerOpen {
		if open {
			n++
		}
	}
	return n
}

// Finished is the number of rows that reached a final outcome.
func (s Snapshot) Finished() int64 { return s.Succeeded + s.Failed }

// ServeHTTP writes the counters in the Prometheus text format.
func (m *Worker) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_ = m.Snapshot(time.Now()).WritePrometheus(w)
}

// WritePrometheus writes s in the Prometheus text exposition format.
func (s Snapshot) WritePrometheus(w io.Writer) error {
	var b []byte
	metric := func(name, typ, help string) {
		b = fmt.Appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	metric("bulk_import_messages_received_total", "counter", "Messages received from the import queue.")
	b = fmt.Appendf(b, "bulk_import_messages_received_total %d\n", s.Received)
	metric("bulk_import_rows_total", "counter", "Messages handled, by outcome.")
	for _, o := range []struct {
		name string
		n    int64
	}{{"succeeded", s.Succeeded}, {"failed", s.Failed}, {"skipped", s.Skipped}, {"retried", s.Retried}, {"released", s.Released}, {"paused", s.Paused}} {
		b = fmt.Appendf(b, "bulk_import_rows_total{outcome=%q} %d\n", o.name, o.n)
	}
	metric("bulk_import_in_flight", "gauge", "Messages being handled now.")
	b = fmt.Appendf(b, "bulk_import_in_flight %d\n", s.InFlight)
	metric("bulk_import_visibility_extensions_total", "counter", "Visibility timeout extensions (heartbeats).")
	b = fmt.Appendf(b, "bulk_import_visibility_extensions_total %d\n", s.Heartbeats)
	metric("bulk_import_errors_total", "counter", "Failed attempts, by error code.")
	for _, code := range slices.Sorted(maps.Keys(s.Errors)) {
		b = fmt.Appendf(b, "bulk_import_errors_total{code=%q} %d\n", code, s.Errors[code])
	}
	metric("bulk_import_step_duration_seconds", "summary", "Time spent in registration step calls.")
	for _, st := range slices.Sorted(maps.Keys(s.StepCalls)) {
		b = fmt.Appendf(b, "bulk_import_step_duration_seconds_sum{step=%q} %g\nbulk_import_step_duration_seconds_count{step=%q} %d\n",
			st, s.StepSeconds[st], st, s.StepCalls[st])
	}
	metric("bulk_import_step_errors_total", "counter", "Registration step calls that failed.")
	for _, st := range slices.Sorted(maps.Keys(s.StepErrors)) {
		b = fmt.Appendf(b, "bulk_import_step_errors_total{step=%q} %d\n", st, s.StepErrors[st])
	}
	metric("bulk_import_breaker_open", "gauge", "1 while the dependency refuses the pipeline and work that needs it is paused.")
	for _, d := range slices.Sorted(maps.Keys(s.BreakerOpen)) {
		open := 0
		if s.BreakerOpen[d] {
			open = 1
		}
		b = fmt.Appendf(b, "bulk_import_breaker_open{dependency=%q} %d\n", d, open)
	}
	metric("bulk_import_maintainer_leader", "gauge", "1 while this worker's maintainer is the elected leader.")
	b = fmt.Appendf(b, "bulk_import_maintainer_leader %d\n", s.Leader)
	metric("bulk_import_jobs_completed_total", "counter", "Job completions recorded by this worker's maintainer.")
	b = fmt.Appendf(b, "bulk_import_jobs_completed_total %d\n", s.JobsCompleted)
	metric("bulk_import_jobs_cancelled_total", "counter", "Jobs cancelled by their failure limits.")
	b = fmt.Appendf(b, "bulk_import_jobs_cancelled_total %d\n", s.JobsCancelled)
	metric("bulk_import_result_files_total", "counter", "Writes of a job's result files, by outcome.")
	b = fmt.Appendf(b, "bulk_import_result_files_total{outcome=\"written\"} %d\nbulk_import_result_files_total{outcome=\"failed\"} %d\n",
		s.ResultsWritten, s.ResultsFailed)
	metric("bulk_import_completion_events_total", "counter", "Completion events by outcome (published; skipped: no destination; failed: retried).")
	b = fmt.Appendf(b, "bulk_import_completion_events_total{outcome=\"published\"} %d\nbulk_import_completion_events_total{outcome=\"skipped\"} %d\nbulk_import_completion_events_total{outcome=\"failed\"} %d\n",
		s.EventsPublished, s.EventsSkipped, s.EventsFailed)
	metric("bulk_import_rows_resent_total", "counter", "Messages re-sent for queued rows whose message was lost.")
	b = fmt.Appendf(b, "bulk_import_rows_resent_total %d\n", s.RowsResent)
	metric("bulk_import_rows_pruned_total", "counter", "Rows whose data was deleted by retention.")
	b = fmt.Appendf(b, "bulk_import_rows_pruned_total %d\n", s.RowsPruned)
	if len(s.Budgets) > 0 {
		for _, g := range []struct {
			name, typ, help string
			value           func(budget.State) float64
		}{
			{"bulk_import_budget_requests_per_second", "gauge", "A fleet budget: requests per second for all workers together (0: none, this worker's cap alone).",
				func(st budget.State) float64 { return st.Budget }},
			{"bulk_import_budget_fleet_rate", "gauge", "What the fleet may send now: the budget, or less after throttling (as of this worker's last sync).",
				func(st budget.State) float64 { return st.Rate }},
			{"bulk_import_budget_share", "gauge", "This worker's rate now: its share of the fleet's rate, or its cap.",
				func(st budget.State) float64 { return st.Share }},
			{"bulk_import_budget_workers", "gauge", "Live workers sharing the fleet budget (as of this worker's last sync; 0: no budget).",
				func(st budget.State) float64 { return float64(st.Workers) }},
			{"bulk_import_budget_idle_workers", "gauge", "Of the live workers sharing the fleet budget, the idle ones (no share while another has work).",
				func(st budget.State) float64 { return float64(st.Idle) }},
			{"bulk_import_budget_calls_total", "counter", "Attempts paced by this worker's limit.",
				func(st budget.State) float64 { return float64(st.Calls) }},
			{"bulk_import_budget_throttled_total", "counter", "Attempts the service throttled.",
				func(st budget.State) float64 { return float64(st.Throttled) }},
		} {
			metric(g.name, g.typ, g.help)
			for _, st := range s.Budgets {
				b = fmt.Appendf(b, "%s{budget=%q} %s\n", g.name, st.Name, strconv.FormatFloat(g.value(st), 'f', -1, 64))
			}
		}
		metric("bulk_import_budget_syncs_total", "counter", "Syncs of the fleet budgets (one database round trip each).")
		b = fmt.Appendf(b, "bulk_import_budget_syncs_total %d\n", s.BudgetSyncs)
	}
	_, err := w.Write(b)
	return err
}

// WriteEMF writes what happened between prev and cur as CloudWatch
// embedded metric format lines: one with the row counters and the
// in-flight gauge, and one per error code seen in the interval.
func WriteEMF(w io.Writer, service string, prev, cur Snapshot) error {
	ts := cur.At.UnixMilli()
	record := map[string]any{
		"Service":          service,
		"MessagesReceived": cur.Received - prev.Received,
		"RowsSucceeded":    cur.Succeeded - prev.Succeeded,
		"RowsFailed":       cur.Failed - prev.Failed,
		"RowsRetried":      cur.Retried - prev.Retried,
		"RowsReleased":     cur.Released - prev.Released,
		"RowsPaused":       cur.Paused - prev.Paused,
		"RowsResent":       cur.RowsResent - prev.RowsResent,
		"ResultsFailed":    cur.ResultsFailed - prev.ResultsFailed,
		"InFlight":         cur.InFlight,
		"BreakersOpen":     cur.BreakersOpen(),
	}
	var defs []map[string]string
	for _, name := range []string{"MessagesReceived", "RowsSucceeded", "RowsFailed", "RowsRetried", "RowsReleased", "RowsPaused", "RowsResent", "ResultsFailed", "InFlight", "BreakersOpen"} {
		defs = append(defs, map[string]string{"Name": name, "Unit": "Count"})
	}
	record["_aws"] = map[string]any{"Timestamp": ts, "CloudWatchMetrics": []any{map[string]any{
		"Namespace": Namespace, "Dimensions": [][]string{{"Service"}}, "Metrics": defs,
	}}}
	enc := json.NewEncoder(w)
	if err := enc.Encode(record); err != nil {
		return err
	}
	for _, st := range cur.Budgets {
		var before budget.State
		for _, p := range prev.Budgets {
			if p.Name == st.Name {
				before = p
			}
		}
		if err := enc.Encode(map[string]any{
			"Service": service, "Budget": st.Name, "BudgetRate": st.Budget, "FleetRate": st.Rate, "Share": st.Share,
			"BudgetCalls": st.Calls - before.Calls, "Throttled": st.Throttled - before.Throttled,
			"_aws": map[string]any{"Timestamp": ts, "CloudWatchMetrics": []any{map[string]any{
				"Namespace": Namespace, "Dimensions": [][]string{{"Service", "Budget"}},
				"Metrics": []map[string]string{{"Name": "BudgetRate", "Unit": "Count/Second"}, {"Name": "FleetRate", "Unit": "Count/Second"},
					{"Name": "Share", "Unit": "Count/Second"}, {"Name": "BudgetCalls", "Unit": "Count"}, {"Name": "Throttled", "Unit": "Count"}},
			}}},
		}); err != nil {
			return err
		}
	}
	for _, code := range slices.Sorted(maps.Keys(cur.Errors)) {
		n := cur.Errors[code] - prev.Errors[code]
		if n == 0 {
			continue
		}
		if err := enc.Encode(map[string]any{
			"Service": service, "ErrorCode": code, "Errors": n,
			"_aws": map[string]any{"Timestamp": ts, "CloudWatchMetrics": []any{map[string]any{
				"Namespace": Namespace, "Dimensions": [][]string{{"Service", "ErrorCode"}},
				"Metrics": []map[string]string{{"Name": "Errors", "Unit": "Count"}},
			}}},
		}); err != nil {
			return err
		}
	}
	return nil
}
