package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Status counts a job's rows by state. Total is every data row read; each
// row is in exactly one of the other counts. Unsent counts queued rows whose
// message has not been sent yet.
type Status struct {
	Job               string    `json:"job"`
	ForceRegistration bool      `json:"force_registration"`
	CreatedAt         time.Time `json:"created_at"`
	Total             int64     `json:"total"`
	Queued            int64     `json:"queued"`
	Succeeded         int64     `json:"succeeded"`
	Failed            int64     `json:"failed"`
	Rejected          int64     `json:"rejected"`
	Duplicate         int64     `json:"duplicate"`
	Unsent            int64     `json:"unsent"`
}

// Done reports whether every row of the job is in a final state.
func (s Status) Done() bool { return s.Queued == 0 }

// Status returns the job's counts, or ErrJobNotFound.
func (s *Store) Status(ctx context.Context, jobID string) (Status, error) {
	job, err := s.Job(ctx, jobID)
	if err != nil {
		return Status{}, err
	}
	st := Status{Job: job.ID, ForceRegistration: job.ForceRegistration, CreatedAt: job.CreatedAt}
	rows, err := s.pool.Query(ctx, `SELECT state, count(*), count(*) FILTER (WHERE state = 'queued' AND sent_at IS NULL)
		FROM bulk_import_row WHERE job_id = $1 GROUP BY state`, jobID)
	if err != nil {
		return Status{}, fmt.Errorf("status of job %s: %w", jobID, err)
	}
	var state string
	var n, unsent int64
	_, err = pgx.ForEachRow(rows, []any{&state, &n, &unsent}, func() error {
		st.Total += n
		st.Unsent += unsent
		switch state {
		case Queued:
			st.Queued = n
		case Succeeded:
			st.Succeeded = n
		case Failed:
			st.Failed = n
		case Rejected:
			st.Rejected = n
		case Duplicate:
			st.Duplicate = n
		default:
			return fmt.Errorf("unknown row state %q", state)
		}
		return nil
	})
	if err != nil {
		return Status{}, fmt.Errorf("status of job %s: %w", jobID, err)
	}
	return st, nil
}

// Problem is a failed or rejected row, for summaries.
type Problem struct {
	Row     int64  `json:"row"`
	Source  string `json:"source"`
	Line    int    `json:"line"`
	State   string `json:"state"`
	Code    string `json:"error_code"`
	Message string `json:"error"`
}

// Problems returns up to limit failed or rejected rows of the job, in row order.
func (s *Store) Problems(ctx context.Context, jobID string, limit int) ([]Problem, error) {
	rows, err := s.pool.Query(ctx, `SELECT r.row_no, s.source, r.line, r.state, coalesce(r.error_code, ''), coalesce(r.error_message, '')
		FROM bulk_import_row r JOIN bulk_import_source s USING (job_id, source_idx)
		WHERE r.job_id = $1 AND r.state IN ('failed', 'rejected')
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
