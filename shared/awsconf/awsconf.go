// Package awsconf loads the AWS configuration once and builds the service
// clients from it. Credentials and region come from the standard chain; the
// AWS_ENDPOINT_URL variable (read by the SDK) points every client at an
// emulator such as the local stack or LocalStack.
package awsconf

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	awsretry "github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	cip "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// Load reads the shared AWS configuration for region. Extra options (tests
// use them for static credentials and an endpoint) come last.
//
// Every client retries with the SDK's standard retryer, but without its
// retry quota: many goroutines sharing one client under faults would drain
// the quota's token bucket and fail with "retry quota exceeded", although
// the worker's own rate limits and backoff already govern the pace.
func Load(ctx context.Context, region string, opts ...func(*config.LoadOptions) error) (aws.Config, error) {
	opts = append([]func(*config.LoadOptions) error{
		config.WithRegion(region),
		config.WithRetryer(func() aws.Retryer { return awsretry.NewStandard(noRetryQuota) }),
	}, opts...)
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS configuration: %w", err)
	}
	// Wrapped after loading, so that settings the loader applies to the
	// client (a custom CA bundle) are kept.
	inner := cfg.HTTPClient
	if inner == nil {
		inner = awshttp.NewBuildableClient()
	}
	cfg.HTTPClient = bufferedBodyClient{inner: inner}
	return cfg, nil
}

// SQS returns an SQS client.
func SQS(cfg aws.Config) *sqs.Client { return sqs.NewFromConfig(cfg) }

// Cognito returns a Cognito user pools client. It retries in the SDK's
// adaptive mode, which slows the client down when Cognito throttles; opts
// come after (the worker's pacing, cognito.Pacing.Option).
func Cognito(cfg aws.Config, opts ...func(*cip.Options)) *cip.Client {
	return cip.NewFromConfig(cfg, append([]func(*cip.Options){func(o *cip.Options) {
		o.Retryer = awsretry.NewAdaptiveMode(func(ao *awsretry.AdaptiveModeOptions) {
			ao.StandardOptions = append(ao.StandardOptions, noRetryQuota)
		})
	}}, opts...)...)
}

func noRetryQuota(o *awsretry.StandardOptions) { o.RateLimiter = ratelimit.None }

// S3 returns an S3 client. With a custom endpoint (an emulator) it uses
// path-style addressing, which emulators need and AWS still serves.
func S3(cfg aws.Config) *s3.Client {
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = cfg.BaseEndpoint != nil
		o.DisableLogOutputChecksumValidationSkipped = true
	})
}

// SNS returns an SNS client.
func SNS(cfg aws.Config) *sns.Client { return sns.NewFromConfig(cfg) }

// EventBridge returns an EventBridge client.
func EventBridge(cfg aws.Config) *eventbridge.Client { return eventbridge.NewFromConfig(cfg) }
