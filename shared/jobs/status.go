package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Counts are a job's rows by state. Total is every data row read; each row
// is in exactly one of the other counts. Unsent counts queued rows whose
// message has not been sent yet.
type Counts struct {
	Total     int64 `json:"total"`
	Queued    int64 `json:"queued"`
	Succeeded int64 `json:"succeeded"`
	Failed    int64 `json:"failed"`
	Rejected  int64 `json:"rejected"`
	Duplicate int64 `json:"duplicate"`
	Cancelled int64 `json:"cancelled"`
	Unsent    int64 `json:"unsent"`
}

// Result file states in Status.Results.
const (
	ResultsPending    = "pending"     // the completion is recorded; the maintainer writes the files within a tick
	ResultsWritten    = "written"     // written to ResultsLocation at ResultsWrittenAt
	ResultsRetrying   = "retrying"    // the last write failed (ResultsError); the maintainer tries again
	ResultsNotWritten = "not_written" // not written, and will not be (ResultsError says why: no bucket)
)

// Completion event states in Status.Event.
const (
	EventSent    = "sent"    // published at EventSentAt
	EventSkipped = "skipped" // no destination was configured: nothing published
	EventPending = "pending" // the maintainer publishes it within a tick (after the result files)
	EventFailing = "failing" // the last publish failed (EventError); the maintainer retries at EventRetryAt
)

// Status is a job's counts and where it stands.
type Status struct {
	Job               string    `json:"job"`
	ForceRegistration bool      `json:"force_registration"`
	CreatedAt         time.Time `json:"created_at"`
	// Recorded: every source given to the job's last splitter run is
	// recorded (a run that stopped half-way leaves it false until re-run).
	Recorded bool `json:"recorded"`
	Counts
	// Done: every row is final and the job's completion is recorded
	// (FinishedAt); its result files follow (Results).
	Done             bool       `json:"done"`
	FinishedAt       *time.Time `json:"finished_at,omitempty"`
	Completion       int        `json:"completion"`
	Results          string     `json:"results,omitempty"`
	ResultsWrittenAt *time.Time `json:"results_written_at,omitempty"`
	ResultsLocation  string     `json:"results_location,omitempty"`
	ResultsError     string     `json:"results_error,omitempty"`
	// The completion event of the latest completion (once Done).
	Event         string     `json:"event,omitempty"`
	EventID       string     `json:"event_id,omitempty"`
	EventSentAt   *time.Time `json:"event_sent_at,omitempty"`
	EventError    string     `json:"event_error,omitempty"`
	EventFailures int        `json:"event_failures,omitempty"`
	EventRetryAt  *time.Time `json:"event_retry_at,omitempty"`
	CancelledAt   *time.Time `json:"cancelled_at,omitempty"`
	CancelReason  string     `json:"cancel_reason,omitempty"`
	PrunedAt      *time.Time `json:"pruned_at,omitempty"` // row data deleted; the counts are those kept then
}

// Summary is what retention keeps of a job's rows.
type Summary struct {
	Counts
	FailuresByCode map[string]int64 `json:"failures_by_code"`
}

// Status returns the job's counts and state, or ErrJobNotFound.
func (s *Store) Status(ctx context.Context, jobID string) (Status, error) {
	job, err := s.Job(ctx, jobID)
	if err != nil {
		return Status{}, err
	}
	st := Status{Job: job.ID, ForceRegistration: job.ForceRegistration, CreatedAt: job.CreatedAt, Recorded: job.RecordedAt != nil,
		FinishedAt: job.FinishedAt, Completion: job.Completion, CancelledAt: job.CancelledAt, CancelReason: job.CancelReason,
		PrunedAt: job.PrunedAt}
	if job.PrunedAt != nil {
		sum, err := s.summary(ctx, jobID)
		if err != nil {
			return Status{}, err
		}
		st.Counts = sum.Counts
	} else if st.Counts, err = s.counts(ctx, s.pool, jobID); err != nil {
		return Status{}, err
	}
	st.Done = st.Queued == 0 && job.FinishedAt != nil
	if st.Done {
		r := job.Results
		st.ResultsError = r.Error
		switch {
		case r.Written >= job.Completion && r.Location != "":
			st.Results, st.ResultsWrittenAt, st.ResultsLocation = ResultsWritten, r.WrittenAt, r.Location
		case r.Written >= job.Completion:
			st.Results = ResultsNotWritten
		case r.Failures > 0:
			st.Results = ResultsRetrying
		default:
			st.Results, st.ResultsError = ResultsPending, ""
		}
		st.eventState(job)
	}
	return st, nil
}

// eventState fills the completion event's state of a done job.
func (st *Status) eventState(job Job) {
	e := job.Event
	if job.Completion == 0 {
		return
	}
	st.EventID = job.ID + "/" + strconv.Itoa(job.Completion)
	switch {
	case e.Sent >= job.Completion && e.Outcome == EventSkipped:
		st.Event = EventSkipped
	case e.Sent >= job.Completion:
		st.Event, st.EventSentAt = EventSent, e.SentAt
	case e.Failures > 0:
		st.Event, st.EventError, st.EventFailures, st.EventRetryAt = EventFailing, e.Error, e.Failures, e.RetryAt
	default:
		st.Event = EventPending
	}
}

// counts reads the job's rows by state.
func (s *Store) counts(ctx context.Context, q Querier, jobID string) (Counts, error) {
	var c Counts
	rows, err := q.Query(ctx, `SELECT state, count(*), count(*) FILTER (WHERE state = 'queued' AND sent_at IS NULL)
		FROM bulk_import_row WHERE job_id = $1 GROUP BY state`, jobID)
	if err != nil {
		return c, fmt.Errorf("status of job %s: %w", jobID, err)
	}
	var state string
	var n, unsent int64
	_, err = pgx.ForEachRow(rows, []any{&state, &n, &unsent}, func() error {
		c.Total += n
		c.Unsent += unsent
		switch state {
		case Queued:
			c.Queued = n
		case Succeeded:
			c.Succeeded = n
		case Failed:
			c.Failed = n
		case Rejected:
			c.Rejected = n
		case Duplicate:
			c.Duplicate = n
		case Cancelled:
			c.Cancelled = n
		default:
			return fmt.Errorf("unknown row state %q", state)
		}
		return nil
	})
	if err != nil {
		return c, fmt.Errorf("status of job %s: %w", jobID, err)
	}
	return c, nil
}

// Summarize reads the job's counts by state and failures by code, as
// retention keeps them, through q (a pool or a transaction).
func (s *Store) Summarize(ctx context.Context, q Querier, jobID string) (Summary, error) {
	var sum Summary
	var err error
	if sum.Counts, err = s.counts(ctx, q, jobID); err != nil {
		return sum, err
	}
	sum.FailuresByCode, err = s.failuresByCode(ctx, q, jobID)
	return sum, err
}

// Querier is a pool or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func (s *Store) summary(ctx context.Context, jobID string) (Summary, error) {
	var sum Summary
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(summary, '{}') FROM bulk_import_job WHERE job_id = $1`, jobID).Scan(&sum); err != nil {
		return sum, fmt.Errorf("summary of job %s: %w", jobID, err)
	}
	return sum, nil
}

// Details are what an operator watching a job needs beyond the counts.
type Details struct {
	FailuresByCode  map[string]int64 `json:"failures_by_code"` // failed, rejected and cancelled rows by code
	OldestQueued    *time.Time       `json:"oldest_queued,omitempty"`
	RecentPerSecond float64          `json:"recent_rows_per_second"` // rows finished by workers over RecentWindow
}

// RecentWindow is the span of the recent rate in Details.
const RecentWindow = 5 * time.Minute

// Details reads a job's failures by code, the age of its oldest queued row
// and its recent rate. Of a pruned job only the failures by code are kept.
func (s *Store) Details(ctx context.Context, jobID string) (Details, error) {
	d := Details{}
	if pruned, err := s.Pruned(ctx, jobID); err != nil || pruned {
		sum, serr := s.summary(ctx, jobID)
		d.FailuresByCode = sum.FailuresByCode
		if d.FailuresByCode == nil {
			d.FailuresByCode = map[string]int64{}
		}
		return d, errors.Join(err, serr)
	}
	var err error
	if d.FailuresByCode, err = s.failuresByCode(ctx, s.pool, jobID); err != nil {
		return d, err
	}
	var recent int64
	if err := s.pool.QueryRow(ctx, `SELECT (SELECT min(coalesce(sent_at, updated_at)) FROM bulk_import_row WHERE job_id = $1 AND state = 'queued'),
		(SELECT count(*) FROM bulk_import_row WHERE job_id = $1 AND finished_at > now() - $2::interval AND state IN ('succeeded', 'failed'))`,
		jobID, RecentWindow.String()).Scan(&d.OldestQueued, &recent); err != nil {
		return d, fmt.Errorf("progress of job %s: %w", jobID, err)
	}
	d.RecentPerSecond = float64(recent) / RecentWindow.Seconds()
	return d, nil
}

// failuresByCode counts the job's failed, rejected and cancelled rows by code.
func (s *Store) failuresByCode(ctx context.Context, q Querier, jobID string) (map[string]int64, error) {
	out := map[string]int64{}
	rows, err := q.Query(ctx, `SELECT coalesce(error_code, 'UNKNOWN'), count(*) FROM bulk_import_row
		WHERE job_id = $1 AND state IN ('failed', 'rejected', 'cancelled') GROUP BY 1`, jobID)
	if err != nil {
		return nil, fmt.Errorf("failures of job %s: %w", jobID, err)
	}
	var code string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&code, &n}, func() error { out[code] = n; return nil }); err != nil {
		return nil, fmt.Errorf("failures of job %s: %w", jobID, err)
	}
	return out, nil
}

// Recent returns the status of the most recently created jobs.
func (s *Store) Recent(ctx context.Context, limit int) ([]Status, error) {
	rows, err := s.pool.Query(ctx, `SELECT job_id FROM bulk_import_job ORDER BY created_at DESC, job_id LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	out := make([]Status, 0, len(ids))
	for _, id := range ids {
		st, err := s.Status(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// Problem is a failed, rejected or cancelled row, for summaries.
type Problem struct {
	Row     int64  `json:"row"`
	Source  string `json:"source"`
	Line    int    `json:"line"`
	State   string `json:"state"`
	Code    string `json:"error_code"`
	Message string `json:"error"`
}

// Problems returns up to limit failed, rejected or cancelled rows of the
// job, in row order.
func (s *Store) Problems(ctx context.Context, jobID string, limit int) ([]Problem, error) {
	rows, err := s.pool.Query(ctx, `SELECT r.row_no, s.source, r.line, r.state, coalesce(r.error_code, ''), coalesce(r.error_message, '')
		FROM bulk_import_row r JOIN bulk_import_source s USING (job_id, source_idx)
		WHERE r.job_id = $1 AND r.state IN ('failed', 'rejected', 'cancelled')
		ORDER BY r.row_no LIMIT $2`, jobID, limit)
	if err != nil {
		return nil, fmt.Errorf("problems of job %s: %w", jobID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Problem, error) {
		var p Problem
		return p, r.Scan(&p.Row, &p.Source, &p.Line, &p.State, &p.Code, &p.Message)
	})
	if err != nil {
		return nil, fmt.Errorf("problems of job %s: %w", jobID, err)
	}
	return out, nil
}
