package faultproxy_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cip "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider"
	"github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider/types"
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
