// Package cognito finds or creates the Cognito user of a leave
// administrator. The user pool uses the email as the username; every email
// is lower-cased before it reaches Cognito.
package cognito

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	cip "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider"
	"github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider/types"
)

// API lists the Cognito calls the import makes.
type API interface {
	AdminGetUser(ctx context.Context, in *cip.AdminGetUserInput, opts ...func(*cip.Options)) (*cip.AdminGetUserOutput, error)
	AdminCreateUser(ctx context.Context, in *cip.AdminCreateUserInput, opts ...func(*cip.Options)) (*cip.AdminCreateUserOutput, error)
	AdminSetUserPassword(ctx context.Context, in *cip.AdminSetUserPasswordInput, opts ...func(*cip.Options)) (*cip.AdminSetUserPasswordOutput, error)
	DescribeUserPool(ctx context.Context, in *cip.DescribeUserPoolInput, opts ...func(*cip.Options)) (*cip.DescribeUserPoolOutput, error)
}

var _ API = (*cip.Client)(nil)

// ErrNoSub is returned when Cognito answers without the user's sub.
var ErrNoSub = errors.New("cognito user has no sub attribute")

// SubMismatchError says the email's Cognito user is not the one expected:
// it has another sub, or does not exist (Sub is then empty). Nothing was
// created.
type SubMismatchError struct {
	Want, Sub string
}

func (e *SubMismatchError) Error() string {
	if e.Sub == "" {
		return "the email has no Cognito user, but a PFML user row holds it under sub " + e.Want
	}
	return "the email's Cognito user has sub " + e.Sub + ", but its PFML user row has sub " + e.Want
}

// User is the Cognito user of an email after EnsureUser.
type User struct {
	Sub         string
	Status      types.UserStatusType
	Created     bool // this call created the user
	PasswordSet bool // this call set the permanent password
}

// Client manages users of one pool.
type Client struct {
	api    API
	poolID string
}

// New returns a client for the pool.
func New(api API, poolID string) *Client { return &Client{api: api, poolID: poolID} }

// EnsureUser returns the user with this (lower-cased) email, creating it if
// needed with a verified email and no invitation message. A user still in
// FORCE_CHANGE_PASSWORD gets a random permanent password, so that the person
// can use "forgot password" to sign in. Safe to call concurrently for the
// same email from many processes.
//
// With wantSub set, the user must already exist with that sub (a PFML user
// row holds the email under it): otherwise a *SubMismatchError is returned
// and nothing is created or changed.
func (c *Client) EnsureUser(ctx context.Context, email, wantSub string) (User, error) {
	u, err := c.get(ctx, email)
	var notFound *types.UserNotFoundException
	missing := errors.As(err, &notFound)
	if err == nil || missing {
		if err := CheckSub(wantSub, u, !missing); err != nil {
			return User{}, err
		}
	}
	if missing {
		u, err = c.create(ctx, email)
		var exists *types.UsernameExistsException
		if errors.As(err, &exists) {
			// Another worker created it between our get and create.
			u, err = c.get(ctx, email)
			u.Created = false
		}
	}
	if err != nil {
		return User{}, err
	}
	if u.NeedsPassword() {
		if err := c.setPassword(ctx, email); err != nil {
			return User{}, err
		}
		u.Status, u.PasswordSet = types.UserStatusTypeConfirmed, true
	}
	return u, nil
}

// CheckSub is EnsureUser's decision before it creates or changes
// anything: with wantSub set (a PFML user row holds the email under that
// sub), the email's user must exist (found) with that sub; otherwise a
// *SubMismatchError.
func CheckSub(wantSub string, u User, found bool) error {
	switch {
	case wantSub == "":
		return nil
	case !found:
		return &SubMismatchError{Want: wantSub}
	case u.Sub != wantSub:
		return &SubMismatchError{Want: wantSub, Sub: u.Sub}
	}
	return nil
}

// NeedsPassword says whether EnsureUser sets the user's permanent
// password: it is still in FORCE_CHANGE_PASSWORD.
func (u User) NeedsPassword() bool { return u.Status == types.UserStatusTypeForceChangePassword }

// Find looks the (lower-cased) email's user up without creating or
// changing anything: found is false when the pool has no such user.
func (c *Client) Find(ctx context.Context, email string) (u User, found bool, err error) {
	u, err = c.get(ctx, email)
	var notFound *types.UserNotFoundException
	if errors.As(err, &notFound) {
		return User{}, false, nil
	}
	return u, err == nil, err
}

func (c *Client) get(ctx context.Context, email string) (User, error) {
	out, err := c.api.AdminGetUser(ctx, &cip.AdminGetUserInput{UserPoolId: &c.poolID, Username: &email})
	if err != nil {
		return User{}, fmt.Errorf("cognito AdminGetUser: %w", err)
	}
	sub := attribute(out.UserAttributes, "sub")
	if sub == "" {
		return User{}, fmt.Errorf("cognito AdminGetUser: %w", ErrNoSub)
	}
	return User{Sub: sub, Status: out.UserStatus}, nil
}

func (c *Client) create(ctx context.Context, email string) (User, error) {
	out, err := c.api.AdminCreateUser(ctx, &cip.AdminCreateUserInput{
		UserPoolId:    &c.poolID,
		Username:      &email,
		MessageAction: types.MessageActionTypeSuppress,
		UserAttributes: []types.AttributeType{
			{Name: aws.String("email"), Value: aws.String(email)},
			{Name: aws.String("email_verified"), Value: aws.String("true")},
		},
	})
	if err != nil {
		return User{}, fmt.Errorf("cognito AdminCreateUser: %w", err)
	}
	if out.User == nil {
		return User{}, fmt.Errorf("cognito AdminCreateUser: %w", ErrNoSub)
	}
	sub := attribute(out.User.Attributes, "sub")
	if sub == "" {
		return User{}, fmt.Errorf("cognito AdminCreateUser: %w", ErrNoSub)
	}
	return User{Sub: sub, Status: out.User.UserStatus, Created: true}, nil
}

func (c *Client) setPassword(ctx context.Context, email string) error {
	pw, err := GeneratePassword()
	if err != nil {
		return err
	}
	if _, err := c.api.AdminSetUserPassword(ctx, &cip.AdminSetUserPasswordInput{
		UserPoolId: &c.poolID, Username: &email, Password: &pw, Permanent: true,
	}); err != nil {
		return fmt.Errorf("cognito AdminSetUserPassword: %w", err) // the SDK error never holds the password
	}
	return nil
}

// Pool is what the start-up check learns of the user pool.
type Pool struct {
	Name string
	// CaseSensitive usernames: the import lower-cases every email, so an
	// existing user whose email has capitals would not be found. A pool
	// without the setting is case-sensitive.
	CaseSensitive bool
}

// DescribePool reads the user pool: it exists, and these credentials may
// read it.
func (c *Client) DescribePool(ctx context.Context) (Pool, error) {
	out, err := c.api.DescribeUserPool(ctx, &cip.DescribeUserPoolInput{UserPoolId: &c.poolID})
	if err != nil {
		return Pool{}, fmt.Errorf("cognito DescribeUserPool %s: %w", c.poolID, err)
	}
	p := Pool{CaseSensitive: true}
	if out.UserPool != nil {
		p.Name = aws.ToString(out.UserPool.Name)
		if uc := out.UserPool.UsernameConfiguration; uc != nil && uc.CaseSensitive != nil {
			p.CaseSensitive = *uc.CaseSensitive
		}
	}
	return p, nil
}

// probeUser is an email no PFML user has: looking it up exercises the
// credentials and the pool without touching anybody.
const probeUser = "bulk-user-import-probe@example.invalid"

// Probe tells whether Cognito serves this pool to these credentials again:
// it looks up a user that does not exist (nil when Cognito answers that).
func (c *Client) Probe(ctx context.Context) error {
	_, err := c.get(ctx, probeUser)
	var notFound *types.UserNotFoundException
	if err == nil || errors.As(err, &notFound) {
		return nil
	}
	return err
}

func attribute(attrs []types.AttributeType, name string) string {
	for _, a := range attrs {
		if a.Name != nil && *a.Name == name && a.Value != nil {
			return *a.Value
		}
	}
	return ""
}
