package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/csvrows"
	"github.com/massgov/bulk-user-import/shared/message"
	"github.com/massgov/bulk-user-import/shared/queue"
)

type splitResult struct {
	label   string
	rows    int
	seconds float64
	rssKiB  int64
}

func (s splitResult) rate() float64 { return float64(s.rows) / s.seconds }

// generate writes a CSV of n rows with distinct emails.
func generate(dir, prefix string, n int, feins func(i int) string) (string, error) {
	path := filepath.Join(dir, fmt.Sprintf("%s-%d.csv", prefix, n))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprintln(w, "fein,email,first_name,last_name")
	for i := range n {
		fmt.Fprintf(w, "%s,%s-%d@bench.example.com,First%d,Last%d\n", feins(i), prefix, i, i, i)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return "", err
	}
	return path, f.Close()
}

func benchSplitter(ctx context.Context, e *env, o options, r *report) error {
	dir, err := os.MkdirTemp("", "bui-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fein := func(i int) string { return fmt.Sprintf("%09d", 100000000+i%997) }
	s3api := awsconf.S3(e.direct)
	sqsapi := awsconf.SQS(e.direct)
	for _, n := range o.splitRows {
		path, err := generate(dir, "split", n, fein)
		if err != nil {
			return err
		}
		for _, from := range []string{"local file", "S3 (emulator)"} {
			res, err := e.resources(ctx, "split")
			if err != nil {
				return err
			}
			src := path
			if from != "local file" {
				f, err := os.Open(path)
				if err != nil {
					return err
				}
				key := filepath.Base(path)
				_, err = s3api.PutObject(ctx, &s3.PutObjectInput{Bucket: &res.SourceBucket, Key: &key, Body: f})
				f.Close()
				if err != nil {
					return fmt.Errorf("upload: %w", err)
				}
				src = "s3://" + res.SourceBucket + "/" + key
			}
			log("splitter: %d rows from %s", n, from)
			start := time.Now()
			out, rss, err := measure(ctx, e.processEnv(res, false), filepath.Join(o.bin, "splitter"), "--job", "split-"+suffix(), src)
			secs := time.Since(start).Seconds()
			if err != nil {
				return fmt.Errorf("splitter: %v\n%s", err, tail(out))
			}
			if got := sentCount(out); got != n {
				return fmt.Errorf("splitter sent %d messages, want %d\n%s", got, n, tail(out))
			}
			r.split = append(r.split, splitResult{label: fmt.Sprintf("splitter, %s", from), rows: n, seconds: secs, rssKiB: rss})
			// Free the emulator's memory before the next run.
			_, _ = sqsapi.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(res.QueueURL)})
			if from != "local file" {
				_, _ = s3api.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &res.SourceBucket, Key: aws.String(filepath.Base(path))})
			}
		}
	}
	if o.naiveRows > 0 {
		path, err := generate(dir, "naive", o.naiveRows, fein)
		if err != nil {
			return err
		}
		res, err := e.resources(ctx, "naive")
		if err != nil {
			return err
		}
		self, err := os.Executable()
		if err != nil {
			return err
		}
		log("naive splitter: %d rows, one SendMessage each", o.naiveRows)
		start := time.Now()
		out, rss, err := measure(ctx, e.processEnv(res, false), self, "naive-split", path)
		if err != nil {
			return fmt.Errorf("naive splitter: %v\n%s", err, tail(out))
		}
		r.split = append(r.split, splitResult{label: "naive: one SendMessage per row (baseline)", rows: o.naiveRows,
			seconds: time.Since(start).Seconds(), rssKiB: rss})
		_, _ = sqsapi.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(res.QueueURL)})
	}
	return nil
}

// naiveSplit is the baseline: read the CSV and send each row with its own
// SendMessage, one after another, recording nothing.
func naiveSplit(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: bench naive-split FILE")
		return 2
	}
	ctx := context.Background()
	cfg, err := awsconf.Load(ctx, "us-east-1")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	q := queue.New(awsconf.SQS(cfg), os.Getenv("IMPORT_QUEUE_URL"))
	f, err := os.Open(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer f.Close()
	rows, err := csvrows.NewReader(args[0], f)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for n := int64(1); ; n++ {
		row, err := rows.Next()
		if errors.Is(err, io.EOF) {
			return 0
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		body, err := message.Encode(message.Row{Job: "naive", Row: n, Email: row.Email, FEIN: row.FEIN})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := q.Send(ctx, queue.Entry{Body: body}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
}

var sentRE = regexp.MustCompile(`sent (\d+) messages`)

func sentCount(out []byte) int {
	m := sentRE.FindSubmatch(out)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// measure runs a command to its end and returns its output and its peak
// resident memory in KiB, read from /proc/PID/status (VmHWM) while it
// runs. (The rusage of a child spawned by this large process is no good:
// Linux carries the parent's high-water mark into a child started with a
// shared address space, as Go starts them.)
func measure(ctx context.Context, env []string, bin string, args ...string) ([]byte, int64, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var peak int64
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if hwm := vmHWM(cmd.Process.Pid); hwm > peak {
			peak = hwm
		}
		select {
		case err := <-done:
			return out.Bytes(), peak, err
		case <-tick.C:
		}
	}
}

// vmHWM reads a live process's peak resident set, in KiB.
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// syncBuffer collects a process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b...)
}

// cpuTime is a finished process's user and system CPU time.
func cpuTime(ps *os.ProcessState) time.Duration {
	return ps.UserTime() + ps.SystemTime()
}

func tail(out []byte) string {
	if len(out) > 2000 {
		out = out[len(out)-2000:]
	}
	return string(out)
}
