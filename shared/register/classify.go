package register

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider/types"
	"github.com/aws/smithy-go"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/massgov/bulk-user-import/shared/breaker"

	"github.com/massgov/bulk-user-import/shared/cognito"
	"github.com/massgov/bulk-user-import/shared/fineos"
	"github.com/massgov/bulk-user-import/shared/pfml"
)

// Error codes. Permanent ones send the row to the dead-letter queue at once;
// transient ones are retried until the queue's maxReceiveCount; systemic
// ones (the pipeline is misconfigured or a dependency refuses it) open the
// dependency's circuit breaker and never fail the row.
const (
	CodeEmployerNotFound      = "EMPLOYER_NOT_FOUND"      // permanent
	CodeEmployerAmbiguous     = "EMPLOYER_AMBIGUOUS"      // permanent
	CodeFineosEmployerMissing = "FINEOS_EMPLOYER_MISSING" // permanent
	CodeFineosNotConfigured   = "FINEOS_NOT_CONFIGURED"   // systemic (fineos): the worker has no FINEOS_CLIENT_* variables
	CodeEmailConflict         = "EMAIL_CONFLICT"          // permanent
	CodeCognitoRejected       = "COGNITO_REJECTED"        // permanent: a 4xx such as InvalidParameterException
	CodeCognitoUserMissing    = "COGNITO_USER_MISSING"    // permanent: UserNotFoundException after create
	CodeCognitoThrottled      = "COGNITO_THROTTLED"       // transient
	CodeCognitoUnavailable    = "COGNITO_UNAVAILABLE"     // transient: 5xx, network
	CodeCognitoAccessDenied   = "COGNITO_ACCESS_DENIED"   // systemic (cognito): credentials refused or missing
	CodeCognitoPoolMissing    = "COGNITO_POOL_MISSING"    // systemic (cognito): ResourceNotFoundException
	CodeFineosRejected        = "FINEOS_REJECTED"         // permanent: 4xx or an error in the answer
	CodeFineosAuthFailed      = "FINEOS_AUTH_FAILED"      // systemic (fineos): credentials refused
	CodeFineosUnavailable     = "FINEOS_UNAVAILABLE"      // transient: 429, 5xx, time-outs, network
	CodeDatabaseUnavailable   = "DATABASE_UNAVAILABLE"    // transient: connection loss, restart, deadlock, serialization
	CodeDatabaseError         = "DATABASE_ERROR"          // permanent: an SQL error retrying cannot fix
	CodeDatabaseReadOnly      = "DATABASE_READ_ONLY"      // systemic (database): 25006, a replica after a failover
	CodeDatabasePermission    = "DATABASE_PERMISSION"     // systemic (database): 42501, the user lacks a privilege
	CodeTimeout               = "TIMEOUT"                 // transient: the row's time ran out
	CodeInternal              = "INTERNAL_ERROR"          // transient: unexpected
)

// Failure is a classified registration error.
type Failure struct {
	Step      string
	Code      string
	Permanent bool
	// Pause names the dependency whose breaker the failure opens: the
	// pipeline, not the row, is at fault. Fix says what the operator
	// should do.
	Pause breaker.Dependency
	Fix   string
	Err   error
}

func (f *Failure) Error() string { return fmt.Sprintf("%s: %v", f.Step, f.Err) }

// Retryable reports whether retrying the call soon may help: the error is
// neither permanent nor systemic (a systemic one waits for its breaker).
func (f *Failure) Retryable() bool { return !f.Permanent && f.Pause == "" }
func (f *Failure) Unwrap() error   { return f.Err }

func permanent(step, code string, err error) *Failure {
	return &Failure{Step: step, Code: code, Permanent: true, Err: err}
}

func transient(step, code string, err error) *Failure {
	return &Failure{Step: step, Code: code, Err: err}
}

func systemic(step, code string, dep breaker.Dependency, fix string, err error) *Failure {
	return &Failure{Step: step, Code: code, Pause: dep, Fix: fix, Err: err}
}

// Systemic failures, as built where the registration decides them.
func fineosNotConfigured(err error) *Failure {
	return systemic(StepFineos, CodeFineosNotConfigured, breaker.Fineos,
		"set every FINEOS_CLIENT_* variable on the workers and restart them; force-registration rows wait meanwhile", err)
}

// awsAuthCodes are the error codes of AWS requests whose credentials are
// refused, expired or missing: the worker's configuration, not the row.
var awsAuthCodes = map[string]bool{
	"AccessDeniedException": true, "AccessDenied": true, "UnrecognizedClientException": true,
	"NotAuthorizedException": true, "ExpiredTokenException": true, "ExpiredToken": true,
	"InvalidClientTokenId": true, "InvalidSignatureException": true, "IncompleteSignature": true,
	"MissingAuthenticationToken": true, "SignatureDoesNotMatch": true,
}

// Classify decides whether err, met in step, is permanent and which code
// names it. This is the one place where errors get their meaning.
func Classify(step string, err error) *Failure {
	var f *Failure
	if errors.As(err, &f) {
		return f
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return transient(step, CodeTimeout, err)
	}
	switch step {
	case StepEmployer:
		switch {
		case errors.Is(err, pfml.ErrEmployerNotFound):
			return permanent(step, CodeEmployerNotFound, err)
		case errors.Is(err, pfml.ErrEmployerAmbiguous):
			return permanent(step, CodeEmployerAmbiguous, err)
		}
		return classifyDatabase(step, err)
	case StepDatabase:
		var conflict *pfml.EmailConflictError
		if errors.As(err, &conflict) {
			return permanent(step, CodeEmailConflict, err)
		}
		return classifyDatabase(step, err)
	case StepCognito:
		return classifyCognito(err)
	case StepFineos:
		return classifyFineos(err)
	}
	return transient(step, CodeInternal, err)
}

func classifyCognito(err error) *Failure {
	const step = StepCognito
	var mismatch *cognito.SubMismatchError
	if errors.As(err, &mismatch) {
		return permanent(step, CodeEmailConflict, err)
	}
	var (
		tooMany   *types.TooManyRequestsException
		limit     *types.LimitExceededException
		internal  *types.InternalErrorException
		notFound  *types.UserNotFoundException
		invalid   *types.InvalidParameterException
		noPool    *types.ResourceNotFoundException
		notAuth   *types.NotAuthorizedException
		quota     ratelimit.QuotaExceededError
		signing   *v4.SigningError
		apiErr    smithy.APIError
		respErr   *awshttp.ResponseError
		isRespErr = errors.As(err, &respErr)
	)
	switch {
	case errors.As(err, &noPool):
		return systemic(step, CodeCognitoPoolMissing, breaker.Cognito,
			"check COGNITO_USER_POOL_ID (and AWS_REGION): the user pool does not exist", err)
	case errors.As(err, &notAuth), errors.As(err, &signing), errors.As(err, &apiErr) && awsAuthCodes[apiErr.ErrorCode()]:
		return systemic(step, CodeCognitoAccessDenied, breaker.Cognito,
			"check the worker's AWS credentials and that its role may call cognito-idp:Admin* on the pool", err)
	case errors.As(err, &tooMany), errors.As(err, &limit), errors.As(err, &quota):
		return transient(step, CodeCognitoThrottled, err)
	case errors.As(err, &internal):
		return transient(step, CodeCognitoUnavailable, err)
	case errors.As(err, &notFound):
		return permanent(step, CodeCognitoUserMissing, err)
	case errors.As(err, &invalid):
		return permanent(step, CodeCognitoRejected, err)
	case isRespErr && respErr.HTTPStatusCode() == 429:
		return transient(step, CodeCognitoThrottled, err)
	case isRespErr && respErr.HTTPStatusCode() >= 500:
		return transient(step, CodeCognitoUnavailable, err)
	case isRespErr && respErr.HTTPStatusCode() >= 400:
		return permanent(step, CodeCognitoRejected, err)
	}
	// No HTTP answer at all: connection refused or reset, DNS, time-out.
	return transient(step, CodeCognitoUnavailable, err)
}

func classifyFineos(err error) *Failure {
	const step = StepFineos
	var he *fineos.HTTPError
	var re *fineos.ResponseError
	switch {
	case errors.As(err, &re):
		return permanent(step, CodeFineosRejected, err)
	case errors.As(err, &he):
		switch {
		case he.Status == 429 || he.Status >= 500:
			return transient(step, CodeFineosUnavailable, err)
		case he.Op == "token" || he.Status == 401 || he.Status == 403:
			return systemic(step, CodeFineosAuthFailed, breaker.Fineos,
				"check FINEOS_CLIENT_OAUTH2_CLIENT_ID, FINEOS_CLIENT_OAUTH2_CLIENT_SECRET and FINEOS_CLIENT_OAUTH2_URL", err)
		default:
			return permanent(step, CodeFineosRejected, err)
		}
	}
	// Time-outs, refused or reset connections, garbled answers.
	return transient(step, CodeFineosUnavailable, err)
}

// classifyDatabase: connection problems, restarts, deadlocks, serialization
// failures and statement time-outs are transient; a read-only server (a
// replica after a failover) and missing privileges are systemic; other SQL
// errors are permanent.
func classifyDatabase(step string, err error) *Failure {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "25006": // read-only SQL transaction
			return systemic(step, CodeDatabaseReadOnly, breaker.Database,
				"the database is read-only (a replica, or a failover in progress): point DB_HOST at the primary", err)
		case pe.Code == "42501": // insufficient privilege
			return systemic(step, CodeDatabasePermission, breaker.Database,
				"grant DB_USER the privileges the import needs on the PFML tables (see the README's Database section)", err)
		case strings.HasPrefix(pe.Code, "08"), // connection exception
			strings.HasPrefix(pe.Code, "53"), // insufficient resources
			pe.Code == "40001",               // serialization failure
			pe.Code == "40P01",               // deadlock detected
			pe.Code == "55P03",               // lock not available
			pe.Code == "57P01",               // admin shutdown
			pe.Code == "57P02",               // crash shutdown
			pe.Code == "57P03",               // cannot connect now (starting up)
			pe.Code == "57014":               // query cancelled: statement time-out
			return transient(step, CodeDatabaseUnavailable, err)
		}
		return permanent(step, CodeDatabaseError, err)
	}
	// No answer from the server: connection refused, reset, pool closed.
	return transient(step, CodeDatabaseUnavailable, err)
}
