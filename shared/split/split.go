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
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/sync/errgroup"

	"github.com/massgov/bulk-user-import/shared/csvrows"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/message"
	"github.com/massgov/bulk-user-import/shared/queue"
	"github.com/massgov/bulk-user-import/shared/results"
	"github.com/massgov/bulk-user-import/shared/source"
)

// Sender sends message batches.
type Sender interface {
	SendBatch(ctx context.Context, entries []queue.Entry) ([]queue.EntryError, error)
}

var _ Sender = (*queue.Queue)(nil)

// Splitter records and enqueues jobs.
type Splitter struct {
	Jobs   *jobs.Store
	Queue  Sender
	Opener source.Opener
	Log    *slog.Logger
	// SendConcurrency is the number of SendMessageBatch calls in flight
	// (default 8). PageSize is the number of rows read from the database
	// at a time for sending (default 1000).
	SendConcurrency int
	PageSize        int
	// Progress, if set, hears how far reading and sending have come.
	Progress Progress
	// Finisher, if set, completes the job when every row is already final
	// once recorded (all rejected or duplicate, or a re-run of a finished
	// job), writing its results.
	Finisher *results.Finisher
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
	unlock, err := s.Jobs.Lock(ctx, opts.Job)
	if err != nil {
		return res, err
	}
	defer unlock()
	if _, res.Created, err = s.Jobs.CreateJob(ctx, opts.Job, opts.ForceRegistration, opts.Limits); err != nil {
		return res, err
	}
	log := s.Log.With("job", opts.Job)

	seen := map[string]bool{}
	for _, src := range opts.Sources {
		sr, err := s.recordSource(ctx, opts.Job, src, seen)
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
	if err := s.Jobs.MarkRecorded(ctx, opts.Job); err != nil {
		return res, err
	}
	res.Sent, err = s.send(ctx, opts)
	if err != nil {
		return res, fmt.Errorf("send messages of job %s (re-run with --job %s to send the rest): %w", opts.Job, opts.Job, err)
	}
	log.Info("messages sent", "sent", res.Sent)
	if s.Finisher != nil {
		s.Finisher.JobMayBeDone(ctx, opts.Job)
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
	done, err := s.Jobs.SourceRecorded(ctx, job, sr.Source)
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
	sr.Counts, err = s.Jobs.RecordSource(ctx, job, sr.Source, rows.Header(), rows)
	var fe *csvrows.Error
	if errors.As(err, &fe) {
		sr.Err, sr.Counts = err, jobs.SourceCounts{}
		return sr, nil
	}
	return sr, err
}

// send pages through the job's unsent rows and sends them.
func (s *Splitter) send(ctx context.Context, opts Options) (int64, error) {
	pageSize := s.PageSize
	if pageSize <= 0 {
		pageSize = 1000
	}
	conc := s.SendConcurrency
	if conc <= 0 {
		conc = 8
	}
	st, err := s.Jobs.Status(ctx, opts.Job)
	if err != nil {
		return 0, err
	}
	var sent, after int64
	for {
		page, err := s.Jobs.UnsentRows(ctx, opts.Job, after, pageSize)
		if err != nil {
			return sent, err
		}
		if len(page) == 0 {
			break
		}
		after = page[len(page)-1].Row
		entries := make([]queue.Entry, 0, len(page))
		for _, r := range page {
			body, err := message.Encode(message.Row{Job: opts.Job, Row: r.Row, Email: r.Email, FEIN: r.FEIN, ForceRegistration: opts.ForceRegistration})
			if err != nil {
				return sent, fmt.Errorf("row %d: %w", r.Row, err)
			}
			entries = append(entries, queue.Entry{ID: strconv.FormatInt(r.Row, 10), Body: body})
		}
		ok, err := s.sendPage(ctx, entries, conc)
		// Record what went out even when part of the page failed.
		if merr := s.Jobs.MarkSent(context.WithoutCancel(ctx), opts.Job, ok); merr != nil {
			return sent, merr
		}
		sent += int64(len(ok))
		if s.Progress != nil {
			s.Progress.Sending(sent, st.Unsent)
		}
		if err != nil {
			return sent, err
		}
	}
	st, err = s.Jobs.Status(ctx, opts.Job)
	if err != nil {
		return sent, err
	}
	if st.Unsent == 0 {
		return sent, s.Jobs.MarkJobSent(ctx, opts.Job)
	}
	return sent, nil
}

// sendPage sends entries in batches, conc calls in flight, and returns the
// rows whose messages SQS accepted. Entries refused for a passing reason
// are retried with backoff.
func (s *Splitter) sendPage(ctx context.Context, entries []queue.Entry, conc int) ([]int64, error) {
	batches, err := queue.Batches(entries)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var ok []int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(conc)
	for _, b := range batches {
		g.Go(func() error {
			sent, err := s.sendBatch(gctx, b)
			mu.Lock()
			ok = append(ok, sent...)
			mu.Unlock()
			return err
		})
	}
	return ok, g.Wait()
}

func (s *Splitter) sendBatch(ctx context.Context, batch []queue.Entry) ([]int64, error) {
	var ok []int64
	pending := batch
	bo := backoff.WithContext(backoff.WithMaxRetries(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(100*time.Millisecond), backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(0)), 6), ctx)
	err := backoff.Retry(func() error {
		failed, err := s.Queue.SendBatch(ctx, pending)
		if err != nil {
			return err // the SDK already retried the call; try the batch again
		}
		refused := map[string]queue.EntryError{}
		for _, f := range failed {
			if f.SenderFault {
				return backoff.Permanent(fmt.Errorf("SQS refused message %s: %w", f.ID, f))
			}
			refused[f.ID] = f
		}
		var retry []queue.Entry
		for _, e := range pending {
			if _, bad := refused[e.ID]; bad {
				retry = append(retry, e)
				continue
			}
			row, _ := strconv.ParseInt(e.ID, 10, 64)
			ok = append(ok, row)
		}
		pending = retry
		if len(pending) > 0 {
			return fmt.Errorf("%d messages refused for now: %v", len(pending), failed[0])
		}
		return nil
	}, bo)
	return ok, err
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
