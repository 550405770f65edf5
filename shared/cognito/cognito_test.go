package cognito_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"unicode"

	"github.com/aws/aws-sdk-go-v2/aws"
	cip "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider"
	"github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider/types"

	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/cognito"
)

func newPool(t *testing.T) (*cip.Client, string) {
	t.Helper()
	api := awsconf.Cognito(stacktest.AWSConfig(t, stacktest.Emulator(t).URL))
	out, err := api.CreateUserPool(context.Background(), &cip.CreateUserPoolInput{
		PoolName:           aws.String("pool-" + stacktest.Suffix()),
		UsernameAttributes: []types.UsernameAttributeType{types.UsernameAttributeTypeEmail},
	})
	if err != nil {
		t.Fatal(err)
	}
	return api, aws.ToString(out.UserPool.Id)
}

func TestEnsureUserCreatesConfirmedUserOnce(t *testing.T) {
	t.Parallel()
	api, pool := newPool(t)
	c := cognito.New(api, pool)
	ctx := context.Background()
	u, err := c.EnsureUser(ctx, "jane@example.com", "")
	if err != nil {
		t.Fatal(err)
	}
	if !u.Created || !u.PasswordSet || u.Sub == "" || u.Status != types.UserStatusTypeConfirmed {
		t.Fatalf("first call: %+v", u)
	}
	again, err := c.EnsureUser(ctx, "jane@example.com", "")
	if err != nil {
		t.Fatal(err)
	}
	if again.Created || again.PasswordSet || again.Sub != u.Sub {
		t.Fatalf("second call: %+v", again)
	}
	got, err := api.AdminGetUser(ctx, &cip.AdminGetUserInput{UserPoolId: &pool, Username: aws.String("jane@example.com")})
	if err != nil {
		t.Fatal(err)
	}
	if got.UserStatus != types.UserStatusTypeConfirmed {
		t.Fatalf("status %s", got.UserStatus)
	}
	attrs := map[string]string{}
	for _, a := range got.UserAttributes {
		attrs[aws.ToString(a.Name)] = aws.ToString(a.Value)
	}
	if attrs["email"] != "jane@example.com" || attrs["email_verified"] != "true" {
		t.Fatalf("attributes %v", attrs)
	}
}

func TestEnsureUserConcurrentlyGivesOneUser(t *testing.T) {
	t.Parallel()
	api, pool := newPool(t)
	c := cognito.New(api, pool)
	const n = 12
	subs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			u, err := c.EnsureUser(context.Background(), "race@example.com", "")
			subs[i], errs[i] = u.Sub, err
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if subs[i] != subs[0] {
			t.Fatalf("two subs for one email: %s and %s", subs[0], subs[i])
		}
	}
}

func TestGeneratedPasswordsMeetThePolicy(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 2000 {
		pw, err := cognito.GeneratePassword()
		if err != nil {
			t.Fatal(err)
		}
		if len(pw) < 12 || seen[pw] {
			t.Fatalf("password %d chars, repeated %v", len(pw), seen[pw])
		}
		seen[pw] = true
		var lower, upper, digit, symbol bool
		for _, r := range pw {
			switch {
			case unicode.IsLower(r):
				lower = true
			case unicode.IsUpper(r):
				upper = true
			case unicode.IsDigit(r):
				digit = true
			case strings.ContainsRune(`^$*.[]{}()?"!@#%&/\,><':;|_~`+"`"+`=+-`, r):
				symbol = true
			default:
				t.Fatalf("character %q is not allowed by Cognito", r)
			}
		}
		if !lower || !upper || !digit || !symbol {
			t.Fatalf("password misses a class: lower %v upper %v digit %v symbol %v", lower, upper, digit, symbol)
		}
	}
}

func TestEnsureUserWithAnExpectedSubCreatesNothingOnMismatch(t *testing.T) {
	t.Parallel()
	api, pool := newPool(t)
	c := cognito.New(api, pool)
	ctx := context.Background()
	_, err := c.EnsureUser(ctx, "nobody@example.com", "sub-of-a-pfml-row")
	var mm *cognito.SubMismatchError
	if !errors.As(err, &mm) || mm.Sub != "" {
		t.Fatalf("err = %v, want a SubMismatchError without sub", err)
	}
	if _, err := api.AdminGetUser(ctx, &cip.AdminGetUserInput{UserPoolId: &pool, Username: aws.String("nobody@example.com")}); err == nil {
		t.Fatal("a user was created despite the mismatch")
	}
	u, err := c.EnsureUser(ctx, "jane@example.com", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.EnsureUser(ctx, "jane@example.com", "another"); !errors.As(err, &mm) || mm.Sub != u.Sub {
		t.Fatalf("err = %v, want a SubMismatchError naming %s", err, u.Sub)
	}
	if got, err := c.EnsureUser(ctx, "jane@example.com", u.Sub); err != nil || got.Sub != u.Sub {
		t.Fatalf("matching sub: %+v %v", got, err)
	}
}

func TestDescribePoolAndProbe(t *testing.T) {
	t.Parallel()
	api, pool := newPool(t)
	ctx := context.Background()
	c := cognito.New(api, pool)
	p, err := c.DescribePool(ctx)
	if err != nil || !strings.HasPrefix(p.Name, "pool-") {
		t.Fatalf("describe: %+v, %v", p, err)
	}
	if err := c.Probe(ctx); err != nil {
		t.Fatalf("probe of a working pool: %v", err)
	}
	missing := cognito.New(api, "us-east-1_doesnotexist")
	var rnf *types.ResourceNotFoundException
	if _, err := missing.DescribePool(ctx); !errors.As(err, &rnf) {
		t.Fatalf("describe of a missing pool: %v", err)
	}
	if err := missing.Probe(ctx); !errors.As(err, &rnf) {
		t.Fatalf("probe of a missing pool: %v", err)
	}
}
