package results

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/massgov/bulk-user-import/shared/jobs"
)

// S3API is the S3 call used to publish results.
type S3API interface {
	PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error)
}

// WriteDir writes the job's files into dir at any time: SUCCEEDED.csv,
// FAILED.csv, and PENDING.csv when rows are still queued (a PENDING.csv
// left by an earlier report is removed once none is). Files are replaced
// whole, never left half-written.
func WriteDir(ctx context.Context, store *jobs.Store, jobID, dir string) (Counts, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Counts{}, fmt.Errorf("report directory: %w", err)
	}
	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	for _, name := range []string{FileSucceeded, FileFailed, FilePending} {
		f, err := os.CreateTemp(dir, "."+name+"-*")
		if err != nil {
			return Counts{}, fmt.Errorf("report: %w", err)
		}
		files[name] = f
	}
	c, err := Generate(ctx, store, jobID, files[FileSucceeded], files[FileFailed], files[FilePending])
	if err != nil {
		return c, err
	}
	for name, f := range files {
		if err := f.Close(); err != nil {
			return c, fmt.Errorf("report: %w", err)
		}
		target := filepath.Join(dir, name)
		if name == FilePending && c.Pending == 0 {
			if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
				return c, fmt.Errorf("report: %w", err)
			}
			continue
		}
		if err := os.Rename(f.Name(), target); err != nil {
			return c, fmt.Errorf("report: %w", err)
		}
	}
	return c, nil
}

// Publisher writes the result files of completed jobs to S3.
type Publisher struct {
	Jobs   *jobs.Store
	S3     S3API // may be nil when Bucket is empty
	Bucket string
	Log    *slog.Logger
}

// Key returns the S3 key of a job's result file.
func Key(jobID, file string) string { return jobID + "/" + file }

// Publish writes SUCCEEDED.csv and FAILED.csv of the job to the bucket and
// records that the completion's results are written. Without a bucket it
// says so in the log and records that instead.
func (p *Publisher) Publish(ctx context.Context, jobID string, completion int) error {
	log := p.Log.With("job", jobID, "completion", completion)
	if p.Bucket == "" {
		log.Warn("no results bucket configured (RESULTS_BUCKET): result files not written; `splitter report` writes them locally")
		return p.Jobs.ResultsWritten(ctx, jobID, completion, nil)
	}
	err := p.upload(ctx, jobID)
	if rerr := p.Jobs.ResultsWritten(ctx, jobID, completion, err); rerr != nil && err == nil {
		err = rerr
	}
	if err != nil {
		log.Error("could not write the result files; another worker retries in a few minutes", "err", err)
		return err
	}
	log.Info("result files written", "succeeded", "s3://"+p.Bucket+"/"+Key(jobID, FileSucceeded), "failed", "s3://"+p.Bucket+"/"+Key(jobID, FileFailed))
	return nil
}

func (p *Publisher) upload(ctx context.Context, jobID string) error {
	dir, err := os.MkdirTemp("", "bui-results-")
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	defer os.RemoveAll(dir)
	c, err := WriteDir(ctx, p.Jobs, jobID, dir)
	if err != nil {
		return err
	}
	if c.Pending > 0 {
		return fmt.Errorf("results: %d rows of job %s are queued again", c.Pending, jobID)
	}
	for _, name := range []string{FileSucceeded, FileFailed} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("results: %w", err)
		}
		_, err = p.S3.PutObject(ctx, &s3.PutObjectInput{
			Bucket: &p.Bucket, Key: aws.String(Key(jobID, name)), Body: f, ContentType: aws.String("text/csv; charset=utf-8"),
		})
		f.Close()
		if err != nil {
			return fmt.Errorf("results: put s3://%s/%s: %w", p.Bucket, Key(jobID, name), err)
		}
	}
	return nil
}

// Finisher is what happens when rows become final: the job may have
// failed too much (it is then cancelled), or become complete (its files
// are then written, once).
type Finisher struct {
	Jobs      *jobs.Store
	Publisher *Publisher
	Log       *slog.Logger
}

// NewFinisher returns the Finisher of store whose result files go to
// bucket (none when bucket is empty).
func NewFinisher(store *jobs.Store, s3 S3API, bucket string, log *slog.Logger) *Finisher {
	return &Finisher{Jobs: store, Log: log, Publisher: &Publisher{Jobs: store, S3: s3, Bucket: bucket, Log: log}}
}

// RowFinal is called after a row of the job became final; failed says the
// row failed, which may exceed the job's failure limits.
func (f *Finisher) RowFinal(ctx context.Context, jobID string, failed bool) {
	log := f.Log.With("job", jobID)
	if failed {
		reason, err := f.Jobs.FailureLimitExceeded(ctx, jobID)
		if err != nil {
			log.Warn("could not check the job's failure limits", "err", err)
		} else if reason != "" {
			n, err := f.Jobs.Cancel(ctx, jobID, reason)
			if err != nil {
				log.Error("failure limit exceeded but the job could not be cancelled", "reason", reason, "err", err)
			} else {
				log.Warn("failure limit exceeded: job cancelled", "reason", reason, "rows_cancelled", n)
			}
		}
	}
	f.JobMayBeDone(ctx, jobID)
}

// JobMayBeDone writes the job's results if it just became complete.
func (f *Finisher) JobMayBeDone(ctx context.Context, jobID string) {
	completion, won, err := f.Jobs.Complete(ctx, jobID)
	if err != nil {
		f.Log.Warn("could not check whether the job is complete", "job", jobID, "err", err)
		return
	}
	if won {
		f.Log.Info("job complete", "job", jobID, "completion", completion)
		_ = f.Publisher.Publish(ctx, jobID, completion)
	}
}

// Sweep writes, every interval until ctx ends, the results of completed
// jobs whose writer died (claimed more than stale ago and not written).
func (f *Finisher) Sweep(ctx context.Context, interval, stale time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for ctx.Err() == nil {
			jobID, completion, ok, err := f.Jobs.ClaimUnwrittenResults(ctx, stale)
			if err != nil || !ok {
				break
			}
			_ = f.Publisher.Publish(ctx, jobID, completion)
		}
	}
}
