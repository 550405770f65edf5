package jobs

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Source is a recorded source file of a job.
type Source struct {
	Index  int
	Name   string
	Header []string
}

// Sources returns the job's sources in the order they were recorded.
func (s *Store) Sources(ctx context.Context, jobID string) ([]Source, error) {
	rows, err := s.pool.Query(ctx, `SELECT source_idx, source, header FROM bulk_import_source WHERE job_id = $1 ORDER BY source_idx`, jobID)
	if err != nil {
		return nil, fmt.Errorf("sources of job %s: %w", jobID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Source, error) {
		var src Source
		return src, r.Scan(&src.Index, &src.Name, &src.Header)
	})
	if err != nil {
		return nil, fmt.Errorf("sources of job %s: %w", jobID, err)
	}
	return out, nil
}

// ReportRow is a row as the result files show it.
type ReportRow struct {
	Row     int64
	Source  int // the Source.Index
	Line    int
	Fields  []string
	State   string
	Code    string
	Message string
	// For duplicates: the first occurrence's row, line, state and code.
	FirstRow   int64
	FirstLine  int
	FirstState string
	FirstCode  string
}

// EachReportRow streams every row of the job, in row order, to fn. Memory
// does not grow with the job's size.
func (s *Store) EachReportRow(ctx context.Context, jobID string, fn func(ReportRow) error) error {
	rows, err := s.pool.Query(ctx, `SELECT r.row_no, r.source_idx, r.line, r.fields, r.state,
		coalesce(r.error_code, ''), coalesce(r.error_message, ''),
		coalesce(f.row_no, 0), coalesce(f.line, 0), coalesce(f.state, ''), coalesce(f.error_code, '')
		FROM bulk_import_row r
		LEFT JOIN bulk_import_row f ON f.job_id = r.job_id AND f.row_no = r.duplicate_of
		WHERE r.job_id = $1 ORDER BY r.row_no`, jobID)
	if err != nil {
		return fmt.Errorf("rows of job %s: %w", jobID, err)
	}
	defer rows.Close()
	var r ReportRow
	for rows.Next() {
		if err := rows.Scan(&r.Row, &r.Source, &r.Line, &r.Fields, &r.State, &r.Code, &r.Message,
			&r.FirstRow, &r.FirstLine, &r.FirstState, &r.FirstCode); err != nil {
			return fmt.Errorf("rows of job %s: %w", jobID, err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("rows of job %s: %w", jobID, err)
	}
	return nil
}
