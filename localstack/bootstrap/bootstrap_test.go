package bootstrap_test

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/massgov/bulk-user-import/localstack/bootstrap"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/queue"
)

func TestEnsureIsIdempotent(t *testing.T) {
	t.Parallel()
	cfg := stacktest.AWSConfig(t, stacktest.Emulator(t).URL)
	clients := bootstrap.Clients{SQS: awsconf.SQS(cfg), S3: awsconf.S3(cfg), Cognito: awsconf.Cognito(cfg), SNS: awsconf.SNS(cfg)}
	sfx := stacktest.Suffix()
	spec := bootstrap.Spec{Region: "us-east-1", QueueName: "q-" + sfx, DLQName: "d-" + sfx, MaxReceiveCount: 7,
		ResultsBucket: "r-" + sfx, UserPoolName: "p-" + sfx, CompletionTopic: "t-" + sfx, CompletionQueue: "tq-" + sfx}
	ctx := context.Background()
	first, err := bootstrap.Ensure(ctx, clients, spec)
	if err != nil {
		t.Fatal(err)
	}
	second, err := bootstrap.Ensure(ctx, clients, spec)
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Fatalf("second run changed the resources:\n%+v\n%+v", first, second)
	}
	p, err := queue.New(clients.SQS, first.QueueURL).Redrive(ctx)
	if err != nil || p.MaxReceiveCount != 7 || p.DeadLetterTargetARN != first.DLQARN {
		t.Fatalf("redrive %+v, %v", p, err)
	}
	out, err := clients.SQS.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: &first.DLQURL,
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameMessageRetentionPeriod}})
	if err != nil || out.Attributes["MessageRetentionPeriod"] != "1209600" {
		t.Fatalf("DLQ retention %v, %v", out.Attributes, err)
	}
	// The completion topic delivers, raw, to its receiver queue: once,
	// though Ensure subscribed it twice.
	if _, err := awsconf.SNS(cfg).Publish(ctx, &sns.PublishInput{TopicArn: &first.CompletionTopicARN, Message: aws.String(`{"x":1}`)}); err != nil {
		t.Fatal(err)
	}
	var bodies []string
	for range 3 {
		rx, err := clients.SQS.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &first.CompletionQueueURL, MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range rx.Messages {
			bodies = append(bodies, aws.ToString(m.Body))
		}
	}
	if len(bodies) != 1 || bodies[0] != `{"x":1}` {
		t.Fatalf("receiver queue got %q: want the raw message once", bodies)
	}
	exports := bootstrap.Exports(first.Env())
	for _, want := range []string{"export IMPORT_QUEUE_URL='" + first.QueueURL + "'", "export DEMO_COMPLETION_SNS_TOPIC_ARN='" + first.CompletionTopicARN + "'",
		"export DEMO_COMPLETION_QUEUE_URL='" + first.CompletionQueueURL + "'", "export COGNITO_USER_POOL_ID='" + first.UserPoolID + "'"} {
		if !strings.Contains(exports, want) {
			t.Errorf("exports lack %q:\n%s", want, exports)
		}
	}
	if got := bootstrap.Exports(map[string]string{"X": "it's"}); got != "export X='it'\\''s'\n" {
		t.Errorf("quoting: %q", got)
	}
}
