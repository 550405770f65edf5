package results

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

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
}

// Errors of Write.
var (
	// ErrNoBucket says there is nowhere to write the result files.
	ErrNoBucket = errors.New("no results bucket configured (RESULTS_BUCKET)")
	// ErrQueuedAgain says rows of the job are queued again (a replay
	// reopened it): its next completion writes the files.
	ErrQueuedAgain = errors.New("rows of the job are queued again")
)

// Key returns the S3 key of a job's result file.
func Key(jobID, file string) string { return jobID + "/" + file }

// Write writes SUCCEEDED.csv and FAILED.csv of the job to the bucket and
// returns where (s3://bucket/job/). Without a bucket it returns
// ErrNoBucket. A job with queued rows again (a replay) is an error: its
// next completion writes them. held, if set, is asked right before each
// file is put: its error (the writer's claim on the files is gone) stops
// the writing.
func (p *Publisher) Write(ctx context.Context, jobID string, held func() error) (string, error) {
	if p == nil || p.Bucket == "" {
		return "", ErrNoBucket
	}
	dir, err := os.MkdirTemp("", "bui-results-")
	if err != nil {
		return "", fmt.Errorf("results: %w", err)
	}
	defer os.RemoveAll(dir)
	c, err := WriteDir(ctx, p.Jobs, jobID, dir)
	if err != nil {
		return "", err
	}
	if c.Pending > 0 {
		return "", fmt.Errorf("results: job %s: %w (%d rows)", jobID, ErrQueuedAgain, c.Pending)
	}
	for _, name := range []string{FileSucceeded, FileFailed} {
		if err := ctx.Err(); err != nil {
			return "", fmt.Errorf("results: %w", context.Cause(ctx))
		}
		if held != nil {
			if err := held(); err != nil {
				return "", fmt.Errorf("results: %w", err)
			}
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return "", fmt.Errorf("results: %w", err)
		}
		_, err = p.S3.PutObject(ctx, &s3.PutObjectInput{
			Bucket: &p.Bucket, Key: aws.String(Key(jobID, name)), Body: f, ContentType: aws.String("text/csv; charset=utf-8"),
		})
		f.Close()
		if err != nil {
			return "", fmt.Errorf("results: put s3://%s/%s: %w", p.Bucket, Key(jobID, name), err)
		}
	}
	return "s3://" + p.Bucket + "/" + jobID + "/", nil
}
