// Package awsconf loads the AWS configuration once and builds the service
// clients from it. Credentials and region come from the standard chain; the
// AWS_ENDPOINT_URL variable (read by the SDK) points every client at an
// emulator such as the local stack or LocalStack.
package awsconf

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	cip "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// Load reads the shared AWS configuration for region.
func Load(ctx context.Context, region string) (aws.Config, error) {
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(region))
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS configuration: %w", err)
	}
	return cfg, nil
}

// SQS returns an SQS client.
func SQS(cfg aws.Config) *sqs.Client { return sqs.NewFromConfig(cfg) }

// Cognito returns a Cognito user pools client.
func Cognito(cfg aws.Config) *cip.Client { return cip.NewFromConfig(cfg) }

// S3 returns an S3 client. With a custom endpoint (an emulator) it uses
// path-style addressing, which emulators need and AWS still serves.
func S3(cfg aws.Config) *s3.Client {
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = cfg.BaseEndpoint != nil
		o.DisableLogOutputChecksumValidationSkipped = true
	})
}
