package motoe2e

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cip "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider"
	ciptypes "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/massgov/bulk-user-import/localstack/bootstrap"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
)

// stale says what to do when one of moto's documented behaviours changes.
const stale = "moto no longer behaves as localstack/README.md says (\"A second emulator: moto\"): update the table"

// TestMotoDifferences pins the behaviours of moto that localstack/README.md
// lists where they differ from AWS or kumo, so that the table stays true
// when moto is upgraded. The pool and queues are made by bootstrap.Ensure,
// in-process.
func TestMotoDifferences(t *testing.T) {
	t.Parallel()
	endpoint := startMoto(t)
	ctx := context.Background()
	cfg := stacktest.AWSConfig(t, endpoint)
	sq, cg := awsconf.SQS(cfg), awsconf.Cognito(cfg)
	spec := bootstrap.DefaultSpec()
	spec.CompletionTopic, spec.SourceBucket, spec.MaxReceiveCount = "", "", 2
	res, err := bootstrap.Ensure(ctx, bootstrap.Clients{SQS: sq, S3: awsconf.S3(cfg), Cognito: cg}, spec)
	if err != nil {
		t.Fatal(err)
	}
	pool := &res.UserPoolID

	t.Run("cognito", func(t *testing.T) {
		d, err := cg.DescribeUserPool(ctx, &cip.DescribeUserPoolInput{UserPoolId: pool})
		if err != nil || d.UserPool.UsernameConfiguration == nil || aws.ToBool(d.UserPool.UsernameConfiguration.CaseSensitive) {
			t.Errorf("DescribeUserPool does not report CaseSensitive=false: %+v %v; %s", d, err, stale)
		}
		out, err := cg.AdminCreateUser(ctx, &cip.AdminCreateUserInput{UserPoolId: pool, Username: aws.String("diff@example.com"), MessageAction: ciptypes.MessageActionTypeSuppress})
		if err != nil {
			t.Fatal(err)
		}
		if u := aws.ToString(out.User.Username); u == "diff@example.com" || len(u) != 36 {
			t.Errorf("the username is %q, not a UUID; %s", u, stale)
		}
		if _, err := cg.AdminGetUser(ctx, &cip.AdminGetUserInput{UserPoolId: pool, Username: aws.String("diff@example.com")}); err != nil {
			t.Errorf("AdminGetUser by email: %v; %s", err, stale)
		}
		var notFound *ciptypes.UserNotFoundException
		if _, err := cg.AdminGetUser(ctx, &cip.AdminGetUserInput{UserPoolId: pool, Username: aws.String("Diff@Example.com")}); !errors.As(err, &notFound) {
			t.Errorf("a capitalised email is found (%v): CaseSensitive=false is applied; %s", err, stale)
		}
		if _, err := cg.AdminCreateUser(ctx, &cip.AdminCreateUserInput{UserPoolId: pool, Username: aws.String("Diff@Example.com"), MessageAction: ciptypes.MessageActionTypeSuppress}); err != nil {
			t.Errorf("a capitalised email is refused (%v): CaseSensitive=false is applied; %s", err, stale)
		}
		l, err := cg.ListUsers(ctx, &cip.ListUsersInput{UserPoolId: pool, Filter: aws.String(`email = "diff@example.com"`)})
		if err != nil || len(l.Users) != 1 {
			t.Errorf("ListUsers with a filter: %v %v; %s", l, err, stale)
		}
		l, err = cg.ListUsers(ctx, &cip.ListUsersInput{UserPoolId: pool, Limit: aws.Int32(1)})
		if err != nil || len(l.Users) != 1 || l.PaginationToken == nil {
			t.Errorf("ListUsers does not page: %v %v; %s", l, err, stale)
		}
		var weak *ciptypes.InvalidPasswordException
		if _, err := cg.AdminSetUserPassword(ctx, &cip.AdminSetUserPasswordInput{UserPoolId: pool, Username: aws.String("diff@example.com"),
			Password: aws.String("short"), Permanent: true}); !errors.As(err, &weak) {
			t.Errorf("a weak password: %v; %s", err, stale)
		}
	})

	t.Run("sqs", func(t *testing.T) {
		var missing *sqstypes.QueueDoesNotExist
		if _, err := sq.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(endpoint + "/123456789012/no-such-queue")}); !errors.As(err, &missing) {
			t.Errorf("a missing queue: %v; %s", err, stale)
		}
		if !strings.Contains(res.QueueURL, "/123456789012/") {
			t.Errorf("queue URL %s; %s", res.QueueURL, stale)
		}
		if _, err := sq.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: &spec.QueueName, Attributes: map[string]string{"VisibilityTimeout": "7"}}); err == nil {
			t.Errorf("CreateQueue of an existing name with other attributes succeeds; %s", stale)
		}
		if _, err := sq.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &res.QueueURL, MessageBody: aws.String(strings.Repeat("x", 1<<20+1))}); err == nil {
			t.Errorf("a message over 1 MiB is accepted; %s", stale)
		}
		if _, err := sq.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &res.QueueURL, MessageBody: aws.String("m"),
			MessageAttributes: map[string]sqstypes.MessageAttributeValue{
				"a": {DataType: aws.String("String"), StringValue: aws.String("1")},
				"b": {DataType: aws.String("String"), StringValue: aws.String("2")},
			}}); err != nil {
			t.Fatal(err)
		}
		first, err := sq.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &res.QueueURL, VisibilityTimeout: 1, WaitTimeSeconds: 1, MessageAttributeNames: []string{"a"}})
		if err != nil || len(first.Messages) != 1 {
			t.Fatalf("receive: %v %v", first, err)
		}
		if n := len(first.Messages[0].MessageAttributes); n != 1 {
			t.Errorf("%d message attributes returned, 1 asked for; %s", n, stale)
		}
		// Its visibility ends after a second: a long poll wakes for it
		// within about another second, not at the end of its 20 s (the
		// margin is for a loaded machine).
		start := time.Now()
		second, err := sq.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &res.QueueURL, VisibilityTimeout: 30, WaitTimeSeconds: 20})
		if err != nil || len(second.Messages) != 1 {
			t.Fatalf("second receive: %v %v", second, err)
		}
		if waited := time.Since(start); waited > 15*time.Second {
			t.Errorf("the long poll waited %s for a message becoming visible; %s", waited, stale)
		}
		// The first receipt handle is old: another receive holds the message.
		if _, err := sq.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: &res.QueueURL,
			ReceiptHandle: first.Messages[0].ReceiptHandle, VisibilityTimeout: 60}); err != nil {
			t.Errorf("ChangeMessageVisibility with an old receipt handle is refused (%v), as in AWS; %s", err, stale)
		}
		if _, err := sq.StartMessageMoveTask(ctx, &sqs.StartMessageMoveTaskInput{SourceArn: &res.DLQARN}); err == nil {
			t.Errorf("StartMessageMoveTask works; %s", stale)
		}
	})
}
