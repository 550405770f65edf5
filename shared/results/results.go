// Package results writes a job's result files, as the original tool did:
// SUCCEEDED.csv with the original columns of the rows registered, and
// FAILED.csv with those of the rows that failed, were rejected or were
// cancelled, plus error, error_code, source and line. A report made while
// rows are still queued also lists them in PENDING.csv. Files go to S3
// (s3://bucket/<job>/...) when a job completes, or to a local directory.
package results

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/massgov/bulk-user-import/shared/jobs"
)

// File names.
const (
	FileSucceeded = "SUCCEEDED.csv"
	FileFailed    = "FAILED.csv"
	FilePending   = "PENDING.csv"
)

// Counts are the rows in each file.
type Counts struct {
	Succeeded, Failed, Pending int64
}

// Neutralize guards a cell against spreadsheet formula injection: a value
// starting with =, +, -, @, tab or carriage return is prefixed with a
// single quote, so that spreadsheets show it as text instead of running it.
func Neutralize(cell string) string {
	if cell != "" && strings.ContainsRune("=+-@\t\r", rune(cell[0])) {
		return "'" + cell
	}
	return cell
}

// layout maps each source's columns onto the union of all sources' columns.
type layout struct {
	columns []string
	index   map[int][]int // source index -> union position of each of its columns
}

func newLayout(sources []jobs.Source) layout {
	l := layout{index: map[int][]int{}}
	pos := map[string]int{}
	for _, src := range sources {
		seen := map[string]int{}
		idx := make([]int, len(src.Header))
		for i, name := range src.Header {
			seen[name]++
			key := name
			if seen[name] > 1 {
				key = fmt.Sprintf("%s_%d", name, seen[name]) // a column named twice in one file
			}
			p, ok := pos[key]
			if !ok {
				p = len(l.columns)
				pos[key] = p
				l.columns = append(l.columns, key)
			}
			idx[i] = p
		}
		l.index[src.Index] = idx
	}
	return l
}

// cells returns a row's original values in union order.
func (l layout) cells(r jobs.ReportRow) []string {
	out := make([]string, len(l.columns))
	for i, p := range l.index[r.Source] {
		if i < len(r.Fields) {
			out[p] = r.Fields[i]
		}
	}
	return out
}

// extra names the columns FAILED.csv adds, avoiding the file's own names.
func (l layout) extra() []string {
	taken := map[string]bool{}
	for _, c := range l.columns {
		taken[strings.ToLower(c)] = true
	}
	out := []string{"error", "error_code", "source", "line"}
	for i, name := range out {
		for taken[strings.ToLower(name)] {
			name = "import_" + name
		}
		out[i] = name
	}
	return out
}

// Generate writes the job's rows to the three writers (pending may be nil
// when no row can be pending). A duplicate row follows the outcome of the
// row it repeats.
func Generate(ctx context.Context, store *jobs.Store, jobID string, succeeded, failed, pending io.Writer) (Counts, error) {
	var c Counts
	if pruned, err := store.Pruned(ctx, jobID); err != nil {
		return c, err
	} else if pruned {
		return c, fmt.Errorf("job %s: %w: its result files were written at completion (and expire in S3)", jobID, jobs.ErrPruned)
	}
	sources, err := store.Sources(ctx, jobID)
	if err != nil {
		return c, err
	}
	names := map[int]string{}
	for _, s := range sources {
		names[s.Index] = s.Name
	}
	l := newLayout(sources)
	sw, fw := newWriter(succeeded), newWriter(failed)
	var pw *csvWriter
	if pending != nil {
		pw = newWriter(pending)
	}
	extra := l.extra()
	sw.write(l.columns)
	fw.write(append(append([]string{}, l.columns...), extra...))
	if pw != nil {
		pw.write(append(append([]string{}, l.columns...), "source", "line"))
	}
	err = store.EachReportRow(ctx, jobID, func(r jobs.ReportRow) error {
		state, code, msg := r.State, r.Code, r.Message
		if state == jobs.Duplicate {
			state, code = r.FirstState, r.FirstCode
			msg = fmt.Sprintf("duplicate of line %d (row %d)", r.FirstLine, r.FirstRow)
			if state != jobs.Succeeded && state != jobs.Queued {
				msg += ", which " + state
			}
		}
		cells := l.cells(r)
		where := []string{names[r.Source], strconv.Itoa(r.Line)}
		switch state {
		case jobs.Succeeded:
			c.Succeeded++
			sw.write(cells)
		case jobs.Queued:
			c.Pending++
			if pw == nil {
				return fmt.Errorf("row %d of job %s is still queued", r.Row, jobID)
			}
			pw.write(append(cells, where...))
		default: // failed, rejected, cancelled
			c.Failed++
			if msg == "" {
				msg = state
			}
			fw.write(append(append(cells, msg, code), where...))
		}
		return nil
	})
	if err != nil {
		return c, err
	}
	for _, w := range []*csvWriter{sw, fw, pw} {
		if w == nil {
			continue
		}
		if err := w.flush(); err != nil {
			return c, fmt.Errorf("write results of job %s: %w", jobID, err)
		}
	}
	return c, nil
}

// csvWriter writes neutralized rows.
type csvWriter struct {
	w   *csv.Writer
	err error
}

func newWriter(w io.Writer) *csvWriter { return &csvWriter{w: csv.NewWriter(w)} }

func (c *csvWriter) write(cells []string) {
	if c.err != nil {
		return
	}
	safe := make([]string, len(cells))
	for i, v := range cells {
		safe[i] = Neutralize(v)
	}
	c.err = c.w.Write(safe)
}

func (c *csvWriter) flush() error {
	c.w.Flush()
	if c.err != nil {
		return c.err
	}
	return c.w.Error()
}
