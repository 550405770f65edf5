// Package split is the splitter's work: read the sources of a job, record
// the job and every row in PostgreSQL, then send one SQS message per
// accepted row, in batches, several batches in flight. Everything is
// recorded before anything is sent, and only rows not yet sent are sent,
// so re-running a job after a crash neither duplicates nor loses rows.
package split

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/massgov/bulk-user-import/shared/csvrows"
	"github.com/massgov/bulk-user-import/shared/enqueue"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/message"
	"github.com/massgov/bulk-user-import/shared/source"
)

// Splitter records and enqueues jobs.
type Splitter struct {
	Lifecycle *lifecycle.Lifecycle // every change of the job goes through it
	Queue     enqueue.Sender
	Opener    source.Opener
	Log       *slog.Logger
	// SendConcurrency is the number of SendMessageBatch calls in flight
	// (default 8). PageSize is the number of rows read from the database
	// at a time for sending (default 1000).
	SendConcurrency int
	PageSize        int
	// Progress, if set, hears how far reading and sending have come.
	Progress Progress
	// Finisher, if set, completes the job at the end of the run when every
	// row is already final (all rejected or duplicate, or a re-run of a
	// finished job): no worker may be running to do it.
	Finisher Finisher
}

// Finisher completes a job now if it is ready; *lifecycle.Lifecycle is one.
type Finisher interface {
	Finish(ctx context.Context, jobID string)
}

// Progress is told how far a run has come. Calls come from the goroutine
// that runs the splitter.
type Progress interface {
	Reading(source string, read, size int64) // size is -1 when unknown
	Sending(sent, total int64)
}

// Options of a run.
type Options struct {
	Job               string
	ForceRegistration bool
	Sources           []string
	Limits            jobs.Limits // cancel the job when too many rows fail
}

// SourceResult says what happened to one source.
type SourceResult struct {
	Source  string
	Counts  jobs.SourceCounts
	Skipped bool  // recorded by an earlier run of the job
	Err     error // the source was refused; nothing of it was recorded
}

// Result of a run.
type Result struct {
	Job     string
	Created bool // the job is new
	Sources []SourceResult
	Sent    int64 // messages sent by this run
}

// Refused returns the sources that were refused.
func (r Result) Refused() []SourceResult { return Refused(r.Sources) }

// Refused returns the refused sources among results.
func Refused(results []SourceResult) []SourceResult {
	var out []SourceResult
	for _, s := range results {
		if s.Err != nil {
			out = append(out, s)
		}
	}
	return out
}

// Run records the sources of the job and sends its unsent rows. Refused
// sources are reported in the result, not as an error; the error is for
// what stopped the run (database or queue trouble), after which the job
// can be re-run with the same id.
func (s *Splitter) Run(ctx context.Context, opts Options) (Result, error) {
	res := Result{Job: opts.Job}
	if err := message.ValidJobID(opts.Job); err != nil {
		return res, err
	}
	unlock, err := s.Lifecycle.Jobs().Lock(ctx, opts.Job)
	if err != nil {
		return res, err
	}
	defer unlock()
	job, created, err := s.Lifecycle.Create(ctx, opts.Job, opts.ForceRegistration, opts.Limits)
	if err != nil {
		return res, err
	}
	res.Created = created
	log := s.Log.With("job", opts.Job)

	seen := map[string]bool{}
	for _, src := range opts.Sources {
		sr, err := s.recordSource(ctx, opts.Job, src, seen)
		if errors.Is(err, jobs.ErrCancelled) && s.Finisher != nil {
			// Cancelled while a source was read: the job is over, and
			// nothing else may be running to complete it.
			unlock()
			s.Finisher.Finish(context.WithoutCancel(ctx), opts.Job)
		}
		if err != nil {
			return res, err
		}
		res.Sources = append(res.Sources, sr)
		switch {
		case sr.Err != nil:
			log.Error("source refused; nothing of it is recorded", "source", sr.Source, "err", sr.Err)
		case sr.Skipped:
			log.Info("source already recorded by an earlier run; not read again", "source", sr.Source)
		default:
			log.Info("source recorded", "source", sr.Source, "rows", sr.Counts.Rows, "accepted", sr.Counts.Accepted,
				"rejected", sr.Counts.Rejected, "duplicates", sr.Counts.Duplicates)
		}
	}
	if err := s.Lifecycle.MarkRecorded(ctx, opts.Job); err != nil {
		return res, err
	}
	res.Sent, err = s.send(ctx, job)
	if err != nil {
		return res, fmt.Errorf("send messages of job %s (re-run with --job %s to send the rest): %w", opts.Job, opts.Job, err)
	}
	log.Info("messages sent", "sent", res.Sent)
	// The run is over: a completion may be recorded from now on.
	unlock()
	if s.Finisher != nil {
		s.Finisher.Finish(ctx, opts.Job)
	}
	return res, nil
}

// recordSource reads one source into the database. A problem of the
// source itself is returned in SourceResult.Err; a database problem as err.
func (s *Splitter) recordSource(ctx context.Context, job, src string, seen map[string]bool) (SourceResult, error) {
	loc, err := source.Parse(src)
	if err != nil {
		return SourceResult{Source: src, Err: err}, nil
	}
	sr := SourceResult{Source: loc.String()}
	if seen[sr.Source] {
		sr.Skipped = true
		return sr, nil
	}
	seen[sr.Source] = true
	done, err := s.Lifecycle.Jobs().SourceRecorded(ctx, job, sr.Source)
	if err != nil {
		return sr, err
	}
	if done {
		sr.Skipped = true
		return sr, nil
	}
	body, size, err := s.Opener.Open(ctx, loc)
	if err != nil {
		sr.Err = err
		return sr, nil
	}
	defer body.Close()
	var in io.Reader = body
	if s.Progress != nil {
		in = &countingReader{r: body, report: func(n int64) { s.Progress.Reading(sr.Source, n, size) }}
	}
	rows, err := csvrows.NewReader(sr.Source, in)
	if err != nil {
		sr.Err = err
		return sr, nil
	}
	sr.Counts, err = s.Lifecycle.RecordSource(ctx, job, sr.Source, rows.Header(), rows)
	var fe *csvrows.Error
	if errors.As(err, &fe) {
		sr.Err, sr.Counts = err, jobs.SourceCounts{}
		return sr, nil
	}
	return sr, err
}

// send sends the job's unsent rows, then notes the job sent when none is
// left.
func (s *Splitter) send(ctx context.Context, job jobs.Job) (int64, error) {
	store := s.Lifecycle.Jobs()
	st, err := store.Status(ctx, job.ID)
	if err != nil {
		return 0, err
	}
	e := &enqueue.Enqueuer{Jobs: store, Book: s.Lifecycle, Queue: s.Queue, Concurrency: s.SendConcurrency, PageSize: s.PageSize}
	if s.Progress != nil {
		e.Progress = func(sent int64) { s.Progress.Sending(sent, st.Unsent) }
	}
	sent, err := e.SendUnsent(ctx, job)
	if err != nil {
		return sent, err
	}
	if st, err = store.Status(ctx, job.ID); err != nil {
		return sent, err
	}
	if st.Unsent == 0 {
		return sent, s.Lifecycle.MarkSent(ctx, job.ID)
	}
	return sent, nil
}

// countingReader reports the bytes read so far.
type countingReader struct {
	r      io.Reader
	n      int64
	report func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.report(c.n)
	return n, err
}
