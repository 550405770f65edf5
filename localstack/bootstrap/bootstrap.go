// Package bootstrap creates, idempotently and through the AWS SDK, what the
// import needs in an AWS account or an emulator: the import queue and its
// dead-letter queue with a redrive policy, the results bucket (and a source
// bucket), and the user pool. Running it twice changes nothing.
package bootstrap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cip "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider"
	ciptypes "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/massgov/bulk-user-import/shared/consume"
	"github.com/massgov/bulk-user-import/shared/queue"
)

// Spec names what to create.
type Spec struct {
	Region            string
	QueueName         string
	DLQName           string
	MaxReceiveCount   int           // default 5
	VisibilityTimeout time.Duration // of the import queue; default 1 min (the worker's default)
	ResultsBucket     string
	SourceBucket      string // optional
	UserPoolName      string
	UserPoolID        string // use this existing pool instead of finding or creating one
	// CompletionTopic, if set (and Clients.SNS), names an SNS topic for
	// the completion events, and CompletionQueue the SQS queue subscribed
	// to it (raw delivery) that receives them locally.
	CompletionTopic string
	CompletionQueue string
}

// DefaultSpec is the local stack's naming.
func DefaultSpec() Spec {
	return Spec{
		Region:            "us-east-1",
		QueueName:         "bulk-user-import",
		DLQName:           "bulk-user-import-dlq",
		MaxReceiveCount:   queue.DefaultMaxReceiveCount,
		VisibilityTimeout: consume.DefaultVisibilityTimeout,
		ResultsBucket:     "bulk-user-import-results",
		SourceBucket:      "bulk-user-import-source",
		UserPoolName:      "pfml-leave-admins-local",
		CompletionTopic:   "bulk-user-import-completions",
		CompletionQueue:   "bulk-user-import-completions-receiver",
	}
}

// Clients are the SDK clients bootstrap uses.
type Clients struct {
	SQS     *sqs.Client
	S3      *s3.Client
	Cognito *cip.Client
	SNS     *sns.Client // optional: no completion topic without it
}

// Resources are what exists after Ensure.
type Resources struct {
	QueueURL      string
	DLQURL        string
	DLQARN        string
	ResultsBucket string
	SourceBucket  string
	UserPoolID    string
	// The completion events' topic and its receiver queue (empty when the
	// spec names none).
	CompletionTopicARN string
	CompletionQueueURL string
}

// Env returns the resources as the environment variables of the binaries.
func (r Resources) Env() map[string]string {
	env := map[string]string{
		"IMPORT_QUEUE_URL":     r.QueueURL,
		"IMPORT_DLQ_URL":       r.DLQURL,
		"COGNITO_USER_POOL_ID": r.UserPoolID,
		"RESULTS_BUCKET":       r.ResultsBucket,
	}
	if r.SourceBucket != "" {
		env["SOURCE_BUCKET"] = r.SourceBucket
	}
	// Not the workers' COMPLETION_SNS_TOPIC_ARN: none is set by default;
	// the demo (and tests) pass it on explicitly.
	if r.CompletionTopicARN != "" {
		env["DEMO_COMPLETION_SNS_TOPIC_ARN"] = r.CompletionTopicARN
		env["DEMO_COMPLETION_QUEUE_URL"] = r.CompletionQueueURL
	}
	return env
}

// Exports renders env as shell export lines, sorted, single-quoted.
func Exports(env map[string]string) string {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "export %s='%s'\n", k, strings.ReplaceAll(env[k], "'", `'\''`))
	}
	return b.String()
}

// Ensure creates whatever is missing and returns the resources.
func Ensure(ctx context.Context, c Clients, spec Spec) (Resources, error) {
	if spec.MaxReceiveCount <= 0 {
		spec.MaxReceiveCount = queue.DefaultMaxReceiveCount
	}
	if spec.VisibilityTimeout <= 0 {
		spec.VisibilityTimeout = consume.DefaultVisibilityTimeout
	}
	var r Resources
	var err error
	if r.DLQURL, err = ensureQueue(ctx, c.SQS, spec.DLQName, map[string]string{
		"MessageRetentionPeriod": strconv.Itoa(14 * 24 * 3600),
	}); err != nil {
		return r, err
	}
	if r.DLQARN, err = queueARN(ctx, c.SQS, r.DLQURL); err != nil {
		return r, err
	}
	policy, _ := json.Marshal(map[string]any{"deadLetterTargetArn": r.DLQARN, "maxReceiveCount": spec.MaxReceiveCount})
	if r.QueueURL, err = ensureQueue(ctx, c.SQS, spec.QueueName, map[string]string{
		"RedrivePolicy":     string(policy),
		"VisibilityTimeout": strconv.Itoa(int(spec.VisibilityTimeout / time.Second)),
	}); err != nil {
		return r, err
	}
	mainARN, err := queueARN(ctx, c.SQS, r.QueueURL)
	if err != nil {
		return r, err
	}
	allow, _ := json.Marshal(map[string]any{"redrivePermission": "byQueue", "sourceQueueArns": []string{mainARN}})
	if _, err := c.SQS.SetQueueAttributes(ctx, &sqs.SetQueueAttributesInput{
		QueueUrl: &r.DLQURL, Attributes: map[string]string{"RedriveAllowPolicy": string(allow)},
	}); err != nil {
		return r, fmt.Errorf("set RedriveAllowPolicy on %s: %w", spec.DLQName, err)
	}
	for _, b := range []string{spec.ResultsBucket, spec.SourceBucket} {
		if b == "" {
			continue
		}
		if err := ensureBucket(ctx, c.S3, b, spec.Region); err != nil {
			return r, err
		}
	}
	r.ResultsBucket, r.SourceBucket = spec.ResultsBucket, spec.SourceBucket
	if r.UserPoolID, err = ensurePool(ctx, c.Cognito, spec); err != nil {
		return r, err
	}
	if spec.CompletionTopic != "" && c.SNS != nil {
		if r.CompletionTopicARN, r.CompletionQueueURL, err = ensureCompletionTopic(ctx, c, spec); err != nil {
			return r, err
		}
	}
	return r, nil
}

// ensureCompletionTopic creates the completion events' topic and a queue
// subscribed to it with raw delivery (the queue receives each event's JSON
// as is). Subscribing again is idempotent in SNS (same endpoint and
// attributes: the same subscription).
func ensureCompletionTopic(ctx context.Context, c Clients, spec Spec) (topicARN, queueURL string, err error) {
	t, err := c.SNS.CreateTopic(ctx, &sns.CreateTopicInput{Name: &spec.CompletionTopic})
	if err != nil {
		return "", "", fmt.Errorf("create topic %s: %w", spec.CompletionTopic, err)
	}
	topicARN = aws.ToString(t.TopicArn)
	if queueURL, err = ensureQueue(ctx, c.SQS, spec.CompletionQueue, map[string]string{}); err != nil {
		return "", "", err
	}
	qARN, err := queueARN(ctx, c.SQS, queueURL)
	if err != nil {
		return "", "", err
	}
	subs, err := c.SNS.ListSubscriptionsByTopic(ctx, &sns.ListSubscriptionsByTopicInput{TopicArn: &topicARN})
	if err != nil {
		return "", "", fmt.Errorf("list subscriptions of %s: %w", spec.CompletionTopic, err)
	}
	for _, s := range subs.Subscriptions {
		if aws.ToString(s.Endpoint) == qARN && aws.ToString(s.Protocol) == "sqs" {
			return topicARN, queueURL, nil
		}
	}
	if _, err := c.SNS.Subscribe(ctx, &sns.SubscribeInput{
		TopicArn: &topicARN, Protocol: aws.String("sqs"), Endpoint: &qARN,
		Attributes: map[string]string{"RawMessageDelivery": "true"}, ReturnSubscriptionArn: true,
	}); err != nil {
		return "", "", fmt.Errorf("subscribe %s to %s: %w", spec.CompletionQueue, spec.CompletionTopic, err)
	}
	return topicARN, queueURL, nil
}

// ensureQueue creates the queue if missing, then sets its attributes, so
// the result is the same whether or not it existed.
func ensureQueue(ctx context.Context, c *sqs.Client, name string, attrs map[string]string) (string, error) {
	out, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: &name})
	if err != nil {
		return "", fmt.Errorf("create queue %s: %w", name, err)
	}
	if _, err := c.SetQueueAttributes(ctx, &sqs.SetQueueAttributesInput{QueueUrl: out.QueueUrl, Attributes: attrs}); err != nil {
		return "", fmt.Errorf("set attributes of queue %s: %w", name, err)
	}
	return aws.ToString(out.QueueUrl), nil
}

func queueARN(ctx context.Context, c *sqs.Client, url string) (string, error) {
	out, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: &url, AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn},
	})
	if err != nil {
		return "", fmt.Errorf("read ARN of %s: %w", url, err)
	}
	arn := out.Attributes[string(sqstypes.QueueAttributeNameQueueArn)]
	if arn == "" {
		return "", fmt.Errorf("queue %s has no QueueArn attribute", url)
	}
	return arn, nil
}

func ensureBucket(ctx context.Context, c *s3.Client, name, region string) error {
	in := &s3.CreateBucketInput{Bucket: &name}
	if region != "" && region != "us-east-1" {
		in.CreateBucketConfiguration = &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraint(region)}
	}
	_, err := c.CreateBucket(ctx, in)
	var owned *s3types.BucketAlreadyOwnedByYou
	if err != nil && !errors.As(err, &owned) {
		return fmt.Errorf("create bucket %s: %w", name, err)
	}
	return nil
}

func ensurePool(ctx context.Context, c *cip.Client, spec Spec) (string, error) {
	if spec.UserPoolID != "" {
		if _, err := c.DescribeUserPool(ctx, &cip.DescribeUserPoolInput{UserPoolId: &spec.UserPoolID}); err != nil {
			return "", fmt.Errorf("user pool %s: %w", spec.UserPoolID, err)
		}
		return spec.UserPoolID, nil
	}
	var token *string
	for {
		out, err := c.ListUserPools(ctx, &cip.ListUserPoolsInput{MaxResults: aws.Int32(60), NextToken: token})
		if err != nil {
			return "", fmt.Errorf("list user pools: %w", err)
		}
		for _, p := range out.UserPools {
			if aws.ToString(p.Name) == spec.UserPoolName {
				return aws.ToString(p.Id), nil
			}
		}
		if aws.ToString(out.NextToken) == "" {
			break
		}
		token = out.NextToken
	}
	out, err := c.CreateUserPool(ctx, &cip.CreateUserPoolInput{
		PoolName:               &spec.UserPoolName,
		UsernameAttributes:     []ciptypes.UsernameAttributeType{ciptypes.UsernameAttributeTypeEmail},
		UsernameConfiguration:  &ciptypes.UsernameConfigurationType{CaseSensitive: aws.Bool(false)},
		AutoVerifiedAttributes: []ciptypes.VerifiedAttributeType{ciptypes.VerifiedAttributeTypeEmail},
		Policies: &ciptypes.UserPoolPolicyType{PasswordPolicy: &ciptypes.PasswordPolicyType{
			MinimumLength: aws.Int32(12), RequireLowercase: true, RequireUppercase: true, RequireNumbers: true, RequireSymbols: true,
		}},
	})
	if err != nil {
		return "", fmt.Errorf("create user pool %s: %w", spec.UserPoolName, err)
	}
	return aws.ToString(out.UserPool.Id), nil
}
