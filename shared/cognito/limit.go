package cognito

import (
	"context"
	"errors"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	awsretry "github.com/aws/aws-sdk-go-v2/aws/retry"
	cip "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"

	"github.com/massgov/bulk-user-import/shared/budget"
)

// Pacing is the limit of each Cognito operation the import calls (nil: not
// paced). Cognito's quotas are per account and region and per category of
// operation; the limits share a fleet budget or cap this worker.
type Pacing struct {
	Get         *budget.Limit // AdminGetUser
	Create      *budget.Limit // AdminCreateUser
	SetPassword *budget.Limit // AdminSetUserPassword
}

// Limits are the pacing's limits, for the fleet and for status.
func (p Pacing) Limits() []*budget.Limit { return []*budget.Limit{p.Get, p.Create, p.SetPassword} }

// Close stops the limits.
func (p Pacing) Close() {
	for _, l := range p.Limits() {
		l.Close()
	}
}

// Option installs the pacing in a Cognito client: every attempt of a paced
// operation, each retry of the SDK included, waits for its limit's token,
// and a throttled attempt (TooManyRequestsException) is reported to the
// limit, which lowers the fleet's rate.
//
// With a fleet budget the fleet's rate is what adapts to Cognito's
// throttling: the client retries in the SDK's standard mode, without the
// adaptive mode's own client-side rate limit, which would slow the
// worker below its share on its own, and its lower accepted rate would
// lower the fleet's rate further.
func (p Pacing) Option() func(*cip.Options) {
	budgeted := false
	for _, l := range p.Limits() {
		budgeted = budgeted || l.Budgeted()
	}
	return func(o *cip.Options) {
		if budgeted {
			o.Retryer = awsretry.NewStandard(func(so *awsretry.StandardOptions) { so.RateLimiter = ratelimit.None })
		}
		o.APIOptions = append(o.APIOptions, func(stack *middleware.Stack) error {
			return stack.Finalize.Insert(pace{p}, "Retry", middleware.After)
		})
	}
}

func (p Pacing) limit(operation string) *budget.Limit {
	switch operation {
	case "AdminGetUser":
		return p.Get
	case "AdminCreateUser":
		return p.Create
	case "AdminSetUserPassword":
		return p.SetPassword
	}
	return nil // DescribeUserPool: once at start and in probes
}

type pace struct{ p Pacing }

func (pace) ID() string { return "BulkImportPace" }

func (m pace) HandleFinalize(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
	l := m.p.limit(awsmiddleware.GetOperationName(ctx))
	if err := l.Wait(ctx); err != nil {
		return middleware.FinalizeOutput{}, middleware.Metadata{}, err
	}
	out, md, err := next.HandleFinalize(ctx, in)
	if IsThrottled(err) {
		l.Throttled()
	}
	return out, md, err
}

// IsThrottled tells Cognito's throttling error.
func IsThrottled(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "TooManyRequestsException"
}
