package register

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/massgov/bulk-user-import/shared/breaker"
	"github.com/massgov/bulk-user-import/shared/fineos"
	"github.com/massgov/bulk-user-import/shared/pfml"
)

func awsStatus(code int) error {
	return &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{StatusCode: code}},
		Err:      errors.New("api error"),
	}}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	netErr := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	tests := []struct {
		step      string
		err       error
		code      string
		permanent bool
	}{
		{StepEmployer, pfml.ErrEmployerNotFound, CodeEmployerNotFound, true},
		{StepEmployer, pfml.ErrEmployerAmbiguous, CodeEmployerAmbiguous, true},
		{StepEmployer, netErr, CodeDatabaseUnavailable, false},
		{StepDatabase, &pfml.EmailConflictError{}, CodeEmailConflict, true},
		{StepDatabase, &pgconn.PgError{Code: "40001"}, CodeDatabaseUnavailable, false},
		{StepDatabase, &pgconn.PgError{Code: "40P01"}, CodeDatabaseUnavailable, false},
		{StepDatabase, &pgconn.PgError{Code: "57P01"}, CodeDatabaseUnavailable, false},
		{StepDatabase, &pgconn.PgError{Code: "08006"}, CodeDatabaseUnavailable, false},
		{StepDatabase, &pgconn.PgError{Code: "23502"}, CodeDatabaseError, true},
		{StepDatabase, fmt.Errorf("wrapped: %w", errors.New("conn closed")), CodeDatabaseUnavailable, false},
		{StepCognito, &types.TooManyRequestsException{}, CodeCognitoThrottled, false},
		{StepCognito, &types.LimitExceededException{}, CodeCognitoThrottled, false},
		{StepCognito, ratelimit.QuotaExceededError{}, CodeCognitoThrottled, false},
		{StepCognito, &types.InternalErrorException{}, CodeCognitoUnavailable, false},
		{StepCognito, &types.InvalidParameterException{}, CodeCognitoRejected, true},
		{StepCognito, &types.UserNotFoundException{}, CodeCognitoUserMissing, true},
		{StepCognito, awsStatus(503), CodeCognitoUnavailable, false},
		{StepCognito, awsStatus(429), CodeCognitoThrottled, false},
		{StepCognito, awsStatus(400), CodeCognitoRejected, true},
		{StepCognito, netErr, CodeCognitoUnavailable, false},
		{StepFineos, &fineos.HTTPError{Op: "provision", Status: 503}, CodeFineosUnavailable, false},
		{StepFineos, &fineos.HTTPError{Op: "provision", Status: 504}, CodeFineosUnavailable, false},
		{StepFineos, &fineos.HTTPError{Op: "provision", Status: 429}, CodeFineosUnavailable, false},
		{StepFineos, &fineos.HTTPError{Op: "provision", Status: 500}, CodeFineosUnavailable, false},
		{StepFineos, &fineos.HTTPError{Op: "provision", Status: 422}, CodeFineosRejected, true},
		{StepFineos, &fineos.HTTPError{Op: "provision", Status: 404}, CodeFineosRejected, true},
		{StepFineos, &fineos.HTTPError{Op: "provision", Status: 403}, CodeFineosAuthFailed, false},
		{StepFineos, &fineos.HTTPError{Op: "token", Status: 401}, CodeFineosAuthFailed, false},
		{StepDatabase, &pgconn.PgError{Code: "57014"}, CodeDatabaseUnavailable, false},
		{StepDatabase, &pgconn.PgError{Code: "25006"}, CodeDatabaseReadOnly, false},
		{StepEmployer, &pgconn.PgError{Code: "42501"}, CodeDatabasePermission, false},
		{StepCognito, &types.ResourceNotFoundException{}, CodeCognitoPoolMissing, false},
		{StepCognito, &types.NotAuthorizedException{}, CodeCognitoAccessDenied, false},
		{StepCognito, &smithy.GenericAPIError{Code: "AccessDeniedException"}, CodeCognitoAccessDenied, false},
		{StepCognito, &smithy.GenericAPIError{Code: "UnrecognizedClientException"}, CodeCognitoAccessDenied, false},
		{StepCognito, &smithy.GenericAPIError{Code: "ExpiredTokenException"}, CodeCognitoAccessDenied, false},
		{StepCognito, &v4.SigningError{Err: errors.New("failed to retrieve credentials")}, CodeCognitoAccessDenied, false},
		{StepFineos, &fineos.HTTPError{Op: "token", Status: 503}, CodeFineosUnavailable, false},
		{StepFineos, &fineos.ResponseError{Code: "X"}, CodeFineosRejected, true},
		{StepFineos, netErr, CodeFineosUnavailable, false},
		{StepFineos, fmt.Errorf("x: %w", context.DeadlineExceeded), CodeTimeout, false},
		{StepCognito, context.DeadlineExceeded, CodeTimeout, false},
	}
	systemicCodes := map[string]breaker.Dependency{
		CodeFineosAuthFailed: breaker.Fineos, CodeFineosNotConfigured: breaker.Fineos,
		CodeCognitoAccessDenied: breaker.Cognito, CodeCognitoPoolMissing: breaker.Cognito,
		CodeDatabaseReadOnly: breaker.Database, CodeDatabasePermission: breaker.Database,
	}
	for _, tt := range tests {
		f := Classify(tt.step, tt.err)
		if f.Code != tt.code || f.Permanent != tt.permanent || f.Step != tt.step {
			t.Errorf("Classify(%s, %T %v) = %s permanent=%v, want %s permanent=%v", tt.step, tt.err, tt.err, f.Code, f.Permanent, tt.code, tt.permanent)
		}
		if dep := systemicCodes[tt.code]; f.Pause != dep || (dep != "") != (f.Fix != "") || f.Retryable() != (!tt.permanent && dep == "") {
			t.Errorf("Classify(%s, %v): pause %q fix %q retryable %v; want pause %q", tt.step, tt.err, f.Pause, f.Fix, f.Retryable(), dep)
		}
		if !errors.Is(f, tt.err) {
			t.Errorf("Classify(%s, %v) does not wrap the error", tt.step, tt.err)
		}
	}
	// An already classified failure keeps its classification.
	orig := permanent(StepEmployer, CodeFineosEmployerMissing, errors.New("x"))
	if got := Classify(StepDatabase, fmt.Errorf("wrapped: %w", orig)); got != orig {
		t.Errorf("reclassified: %+v", got)
	}
}
