package cognito

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	cip "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider"
)

type countingAPI struct{ get, create, set atomic.Int64 }

func (c *countingAPI) AdminGetUser(context.Context, *cip.AdminGetUserInput, ...func(*cip.Options)) (*cip.AdminGetUserOutput, error) {
	c.get.Add(1)
	return &cip.AdminGetUserOutput{}, nil
}

func (c *countingAPI) AdminCreateUser(context.Context, *cip.AdminCreateUserInput, ...func(*cip.Options)) (*cip.AdminCreateUserOutput, error) {
	c.create.Add(1)
	return &cip.AdminCreateUserOutput{}, nil
}

func (c *countingAPI) AdminSetUserPassword(context.Context, *cip.AdminSetUserPasswordInput, ...func(*cip.Options)) (*cip.AdminSetUserPasswordOutput, error) {
	c.set.Add(1)
	return &cip.AdminSetUserPasswordOutput{}, nil
}

func (c *countingAPI) DescribeUserPool(context.Context, *cip.DescribeUserPoolInput, ...func(*cip.Options)) (*cip.DescribeUserPoolOutput, error) {
	return &cip.DescribeUserPoolOutput{}, nil
}

var _ API = (*countingAPI)(nil)

func TestLimitPacesEachOperationOnItsOwn(t *testing.T) {
	t.Parallel()
	inner := &countingAPI{}
	api := Limit(inner, Limits{Create: 40})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	for ctx.Err() == nil {
		if _, err := api.AdminCreateUser(ctx, &cip.AdminCreateUserInput{}); err != nil {
			break
		}
	}
	// 40/s for half a second: at most 20 calls, plus the first one.
	if n := inner.create.Load(); n > 21 || n < 5 {
		t.Fatalf("%d creates in 500ms at 40/s", n)
	}
	// Unlimited operations are not held back by the create limit.
	for range 1000 {
		_, _ = api.AdminGetUser(context.Background(), &cip.AdminGetUserInput{})
	}
	if inner.get.Load() != 1000 {
		t.Fatal("gets were limited")
	}
	if _, err := api.AdminCreateUser(ctx, &cip.AdminCreateUserInput{}); err == nil {
		t.Fatal("a call with an ended context went through")
	}
}
