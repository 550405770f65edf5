package faultproxy_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cip "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider"
	"github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go"

	"github.com/massgov/bulk-user-import/localstack/faultproxy"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
)

func setup(t *testing.T) (*faultproxy.Proxy, aws.Config) {
	t.Helper()
	p, err := faultproxy.NewAWS(stacktest.Emulator(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, stacktest.AWSConfig(t, srv.URL)
}

func TestEveryKindOfFaultReachesTheSDKAsItWould(t *testing.T) {
	t.Parallel()
	p, cfg := setup(t)
	ctx := context.Background()
	noRetry := func(o *sqs.Options) { o.Retryer = aws.NopRetryer{} }
	api := sqs.NewFromConfig(cfg)
	name := "fp-" + stacktest.Suffix()

	p.Set(faultproxy.SQS, faultproxy.Faults{Throttle: 1})
	_, err := api.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: &name}, noRetry)
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "ThrottlingException" {
		t.Fatalf("throttle: %v", err)
	}

	// The call takes effect, then fails: the queue exists afterwards.
	p.Set(faultproxy.SQS, faultproxy.Faults{ErrorAfter: 1})
	if _, err := api.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: &name}, noRetry); err == nil {
		t.Fatal("error_after: no error")
	}
	p.Set(faultproxy.SQS, faultproxy.Faults{Drop: 1})
	if _, err := api.ListQueues(ctx, &sqs.ListQueuesInput{}, noRetry); err == nil {
		t.Fatal("drop: no error")
	}
	p.Set(faultproxy.SQS, faultproxy.Faults{Latency: 50 * time.Millisecond})
	start := time.Now()
	if _, err := api.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: &name}); err != nil {
		t.Fatalf("the queue created by the failed call is missing: %v", err)
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Fatal("no latency added")
	}

	// Cognito throttling is the typed exception.
	p.Set(faultproxy.Cognito, faultproxy.Faults{Throttle: 1})
	_, err = awsconf.Cognito(cfg).ListUserPools(ctx, &cip.ListUserPoolsInput{MaxResults: aws.Int32(1)},
		func(o *cip.Options) { o.Retryer = aws.NopRetryer{} })
	var tm *types.TooManyRequestsException
	if !errors.As(err, &tm) {
		t.Fatalf("cognito throttle: %v", err)
	}

	// Refused credentials: every call, the code the SDK models.
	p.Set(faultproxy.Cognito, faultproxy.Faults{Refuse: "AccessDeniedException"})
	_, err = awsconf.Cognito(cfg).ListUserPools(ctx, &cip.ListUserPoolsInput{MaxResults: aws.Int32(1)})
	if !errors.As(err, &ae) || ae.ErrorCode() != "AccessDeniedException" {
		t.Fatalf("cognito refuse: %v", err)
	}
	p.Set(faultproxy.Cognito, faultproxy.Faults{})

	c := p.Counts()
	for _, k := range []string{"sqs.throttle", "sqs.error_after", "sqs.drop", "cognito.throttle", "cognito.refused"} {
		if c[k] != 1 {
			t.Errorf("count %s = %d, want 1 (%v)", k, c[k], c)
		}
	}
}

// A quota on an operation throttles what goes over it, for every client,
// and leaves other operations alone.
func TestAQuotaThrottlesWhatGoesOverIt(t *testing.T) {
	t.Parallel()
	p, cfg := setup(t)
	ctx := context.Background()
	api := cip.NewFromConfig(cfg, func(o *cip.Options) { o.Retryer = aws.NopRetryer{} })
	p.SetQuota("AdminGetUser", faultproxy.Quota{Rate: 10, Burst: 3})
	throttled := 0
	start := time.Now()
	for range 20 {
		_, err := api.AdminGetUser(ctx, &cip.AdminGetUserInput{UserPoolId: aws.String("us-east-1_none"), Username: aws.String("a")})
		var ae smithy.APIError
		if errors.As(err, &ae) && ae.ErrorCode() == "TooManyRequestsException" {
			throttled++
		}
	}
	// 20 calls at once-ish: the burst of 3 and about 10/s of the elapsed time pass.
	allowed := 3 + int(time.Since(start).Seconds()*10) + 1
	c := p.Counts()
	if throttled < 20-allowed || c["cognito.quota.AdminGetUser.throttled"] != int64(throttled) ||
		c["cognito.quota.AdminGetUser.accepted"] != int64(20-throttled) {
		t.Fatalf("%d throttled of 20 (at most %d allowed); counts %v", throttled, allowed, c)
	}
	if _, err := api.DescribeUserPool(ctx, &cip.DescribeUserPoolInput{UserPoolId: aws.String("us-east-1_none")}); err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) && ae.ErrorCode() == "TooManyRequestsException" {
			t.Fatal("an operation without a quota was throttled")
		}
	}
	p.SetQuota("AdminGetUser", faultproxy.Quota{})
	if _, err := api.AdminGetUser(ctx, &cip.AdminGetUserInput{UserPoolId: aws.String("us-east-1_none"), Username: aws.String("a")}); err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) && ae.ErrorCode() == "TooManyRequestsException" {
			t.Fatal("throttled after the quota was removed")
		}
	}
}

// A gate holds S3 PUTs of objects; a held request whose client went away
// is not forwarded, and one released is.
func TestAGateHoldsPutsAndDropsThoseWhoseClientLeft(t *testing.T) {
	t.Parallel()
	p, cfg := setup(t)
	ctx := context.Background()
	direct := awsconf.S3(stacktest.AWSConfig(t, stacktest.Emulator(t).URL))
	bucket := "fp-" + stacktest.Suffix()
	if _, err := direct.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatal(err)
	}
	api := awsconf.S3(cfg)
	put := func(ctx context.Context, key string) error {
		_, err := api.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String(key), Body: strings.NewReader("x")},
			func(o *s3.Options) { o.Retryer = aws.NopRetryer{} })
		return err
	}
	exists := func(key string) bool {
		_, err := direct.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: aws.String(key)})
		return err == nil
	}
	gate := p.Hold(faultproxy.PutObject)
	defer gate.Release()

	// A held PUT whose client gives up is never forwarded.
	gone, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- put(gone, "abandoned") }()
	select {
	case <-gate.Held():
	case <-time.After(10 * time.Second):
		t.Fatal("the PUT was not held")
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("a cancelled PUT succeeded")
	}
	for deadline := time.Now().Add(10 * time.Second); gate.Abandoned() != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the proxy did not notice the client went away")
		}
	}
	// Other operations pass the gate.
	if _, err := api.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &bucket}); err != nil {
		t.Fatalf("HeadBucket through the gate: %v", err)
	}
	// A held PUT whose client waits is forwarded on release.
	go func() { done <- put(ctx, "released") }()
	for deadline := time.Now().Add(10 * time.Second); p.Counts()["s3.held"] != 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the second PUT was not held: %v", p.Counts())
		}
	}
	gate.Release()
	if err := <-done; err != nil {
		t.Fatalf("released PUT: %v", err)
	}
	if exists("abandoned") || !exists("released") {
		t.Fatalf("abandoned object exists: %t, released object exists: %t", exists("abandoned"), exists("released"))
	}
	if c := p.Counts(); c["s3.held.abandoned"] != 1 {
		t.Fatalf("counts: %v", c)
	}
}
