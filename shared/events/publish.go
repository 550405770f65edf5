package events

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	snstypes "github.com/aws/aws-sdk-go-v2/service/sns/types"
	"github.com/aws/smithy-go"
)

// Source is the EventBridge source of the events.
const Source = "bulk-user-import"

// Detail types on EventBridge.
const (
	DetailCompleted = "Bulk import job completed"
	DetailCancelled = "Bulk import job cancelled"
)

// SNSAPI is the SNS call used.
type SNSAPI interface {
	Publish(ctx context.Context, in *sns.PublishInput, opts ...func(*sns.Options)) (*sns.PublishOutput, error)
}

// SNS publishes events to a topic (standard or FIFO) as JSON, with the
// message attributes job, state, event_id and type (for subscription
// filter policies).
type SNS struct {
	API   SNSAPI
	Topic string // ARN
}

// Destination names the topic.
func (p *SNS) Destination() string { return "sns:" + p.Topic }

// Publish sends e to the topic. On a FIFO topic the job is the message
// group and the event id deduplicates.
func (p *SNS) Publish(ctx context.Context, e Event) error {
	body, err := e.Marshal()
	if err != nil {
		return &PermanentError{Err: err}
	}
	str := func(v string) snstypes.MessageAttributeValue {
		return snstypes.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
	}
	in := &sns.PublishInput{
		TopicArn: aws.String(p.Topic),
		Message:  aws.String(string(body)),
		MessageAttributes: map[string]snstypes.MessageAttributeValue{
			"job": str(e.Job), "state": str(e.State), "event_id": str(e.EventID), "type": str(e.Type),
		},
	}
	if strings.HasSuffix(p.Topic, ".fifo") {
		in.MessageGroupId = aws.String(e.Job)
		in.MessageDeduplicationId = aws.String(dedupID(e.EventID))
	}
	if _, err := p.API.Publish(ctx, in); err != nil {
		return classify(fmt.Errorf("publish event %s to SNS topic %s: %w", e.EventID, p.Topic, err))
	}
	return nil
}

// dedupID fits an event id in SNS's deduplication id (at most 128
// characters of a restricted set): job ids are short and plain, but bound
// it anyway.
func dedupID(id string) string {
	b := make([]byte, 0, len(id))
	for i := 0; i < len(id) && len(b) < 128; i++ {
		c := id[i]
		if c >= '!' && c <= '~' {
			b = append(b, c)
		} else {
			b = append(b, '_')
		}
	}
	return string(b)
}

// EventBridgeAPI is the EventBridge call used.
type EventBridgeAPI interface {
	PutEvents(ctx context.Context, in *eventbridge.PutEventsInput, opts ...func(*eventbridge.Options)) (*eventbridge.PutEventsOutput, error)
}

// EventBridge publishes events to a bus: Source "bulk-user-import", the
// detail type by the event's type, the event as detail.
type EventBridge struct {
	API EventBridgeAPI
	Bus string // name or ARN
}

// Destination names the bus.
func (p *EventBridge) Destination() string { return "eventbridge:" + p.Bus }

// Publish sends e to the bus; an entry the bus refused is an error.
func (p *EventBridge) Publish(ctx context.Context, e Event) error {
	body, err := e.Marshal()
	if err != nil {
		return &PermanentError{Err: err}
	}
	detailType := DetailCompleted
	if e.Type == TypeCancelled {
		detailType = DetailCancelled
	}
	out, err := p.API.PutEvents(ctx, &eventbridge.PutEventsInput{Entries: []ebtypes.PutEventsRequestEntry{{
		Source: aws.String(Source), DetailType: aws.String(detailType), Detail: aws.String(string(body)),
		EventBusName: aws.String(p.Bus), Resources: []string{},
	}}})
	if err != nil {
		return classify(fmt.Errorf("put event %s on EventBridge bus %s: %w", e.EventID, p.Bus, err))
	}
	if out.FailedEntryCount > 0 {
		code, msg := "unknown", ""
		if len(out.Entries) > 0 {
			code, msg = aws.ToString(out.Entries[0].ErrorCode), aws.ToString(out.Entries[0].ErrorMessage)
		}
		err := fmt.Errorf("put event %s on EventBridge bus %s: entry refused: %s: %s", e.EventID, p.Bus, code, msg)
		if permanentCodes[code] {
			return &PermanentError{Err: err}
		}
		return err
	}
	return nil
}

// permanentCodes are the API error codes retrying does not cure.
var permanentCodes = map[string]bool{
	"NotFound": true, "NotFoundException": true, "ResourceNotFoundException": true,
	"AuthorizationError": true, "AccessDenied": true, "AccessDeniedException": true,
	"InvalidParameter": true, "InvalidParameterValue": true, "ValidationException": true,
	"InvalidArgument": true, "KMSAccessDenied": true, "KMSDisabled": true, "KMSNotFound": true,
	"UnrecognizedClientException": true, "InvalidClientTokenId": true,
}

// classify wraps err as permanent when it is a typed error (or an API
// error code) that retrying will not cure; other errors (throttling,
// network, 5xx) are transient.
func classify(err error) error {
	var (
		notFound   *snstypes.NotFoundException
		auth       *snstypes.AuthorizationErrorException
		param      *snstypes.InvalidParameterException
		paramValue *snstypes.InvalidParameterValueException
		ebNotFound *ebtypes.ResourceNotFoundException
		ebDenied   *ebtypes.AccessDeniedException
		api        smithy.APIError
	)
	switch {
	case errors.As(err, &notFound), errors.As(err, &auth), errors.As(err, &param), errors.As(err, &paramValue),
		errors.As(err, &ebNotFound), errors.As(err, &ebDenied):
		return &PermanentError{Err: err}
	case errors.As(err, &api) && permanentCodes[api.ErrorCode()]:
		return &PermanentError{Err: err}
	}
	return err
}
