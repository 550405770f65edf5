package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/cli"
	sharedconfig "github.com/massgov/bulk-user-import/shared/config"
	"github.com/massgov/bulk-user-import/shared/textbound"
)

// errNoEvent says no event arrived before the deadline.
var errNoEvent = errors.New("no completion event received")

// runEvents receives completion events from the local receiver queue (the
// SQS queue subscribed to the completion topic) and prints each as
// indented JSON: events of --job only (others are left in the queue), at
// least --count of them, waiting up to --wait; received events are
// deleted from the queue.
func runEvents(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("devstack events", flag.ContinueOnError)
	queueURL := fs.String("queue-url", os.Getenv("DEMO_COMPLETION_QUEUE_URL"), "the receiver queue (env DEMO_COMPLETION_QUEUE_URL)")
	job := fs.String("job", "", "print only this job's events")
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for the events")
	count := fs.Int("count", 1, "wait for this many events (then print what else is there)")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *queueURL == "" {
		return errors.New("no receiver queue: set DEMO_COMPLETION_QUEUE_URL (devstack serve writes it) or --queue-url")
	}
	cfg, err := awsconf.Load(ctx, sharedconfig.FromEnv(os.Getenv).Region)
	if err != nil {
		return err
	}
	q := awsconf.SQS(cfg)
	ctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	printed := 0
	for {
		out, err := q.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: queueURL, MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			return fmt.Errorf("receive from %s: %w", *queueURL, err)
		}
		if len(out.Messages) == 0 && printed >= *count {
			break
		}
		for _, m := range out.Messages {
			body := []byte(aws.ToString(m.Body))
			var head struct {
				Job string `json:"job"`
			}
			if err := json.Unmarshal(body, &head); err != nil {
				fmt.Fprintf(os.Stderr, "devstack events: not an event (%v): %s\n", err, textbound.OneLine(string(body), 200))
			}
			if *job != "" && head.Job != *job {
				// Another job's: back to the queue for whoever waits for it.
				_, _ = q.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: queueURL, ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: 0})
				continue
			}
			var pretty bytes.Buffer
			if json.Indent(&pretty, body, "", "  ") != nil {
				pretty.Reset()
				pretty.Write(body)
			}
			fmt.Fprintln(stdout, pretty.String())
			printed++
			if _, err := q.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: queueURL, ReceiptHandle: m.ReceiptHandle}); err != nil {
				return fmt.Errorf("delete from %s: %w", *queueURL, err)
			}
		}
	}
	if printed < *count {
		return fmt.Errorf("%w within %s (%d of %d)", errNoEvent, *wait, printed, *count)
	}
	return nil
}
