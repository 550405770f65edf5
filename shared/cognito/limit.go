package cognito

import (
	"context"

	cip "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider"
	"golang.org/x/time/rate"
)

// Limits are the most requests per second one worker sends to each Cognito
// operation; 0 means no limit. Cognito's quotas are per account and per
// category of operations, so N workers should each get quota / N.
type Limits struct {
	Get         float64 // AdminGetUser
	Create      float64 // AdminCreateUser
	SetPassword float64 // AdminSetUserPassword
}

// Limit returns api with each call waiting for its operation's limiter.
func Limit(api API, l Limits) API {
	return &limited{api: api, get: limiter(l.Get), create: limiter(l.Create), setPassword: limiter(l.SetPassword)}
}

// limiter paces calls evenly (a burst of one) at perSecond; nil for none.
func limiter(perSecond float64) *rate.Limiter {
	if perSecond <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(perSecond), 1)
}

type limited struct {
	api                      API
	get, create, setPassword *rate.Limiter
}

func wait(ctx context.Context, l *rate.Limiter) error {
	if l == nil {
		return nil
	}
	return l.Wait(ctx)
}

func (l *limited) AdminGetUser(ctx context.Context, in *cip.AdminGetUserInput, opts ...func(*cip.Options)) (*cip.AdminGetUserOutput, error) {
	if err := wait(ctx, l.get); err != nil {
		return nil, err
	}
	return l.api.AdminGetUser(ctx, in, opts...)
}

func (l *limited) AdminCreateUser(ctx context.Context, in *cip.AdminCreateUserInput, opts ...func(*cip.Options)) (*cip.AdminCreateUserOutput, error) {
	if err := wait(ctx, l.create); err != nil {
		return nil, err
	}
	return l.api.AdminCreateUser(ctx, in, opts...)
}

func (l *limited) AdminSetUserPassword(ctx context.Context, in *cip.AdminSetUserPasswordInput, opts ...func(*cip.Options)) (*cip.AdminSetUserPasswordOutput, error) {
	if err := wait(ctx, l.setPassword); err != nil {
		return nil, err
	}
	return l.api.AdminSetUserPassword(ctx, in, opts...)
}

// DescribeUserPool is called once at start: not limited.
func (l *limited) DescribeUserPool(ctx context.Context, in *cip.DescribeUserPoolInput, opts ...func(*cip.Options)) (*cip.DescribeUserPoolOutput, error) {
	return l.api.DescribeUserPool(ctx, in, opts...)
}
