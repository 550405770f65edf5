// Package register performs the registration of one (email, FEIN) pair in
// Cognito, the PFML database and, with force registration, FINEOS. Each
// step is idempotent and safe when the same pair, or the same email, is
// registered by several workers at once. Errors come back as *Failure,
// classified as permanent or transient in one place (classify.go).
//
// The database is reached in batches sent in one round trip and one
// implicit transaction each: before any side effect, the row's attempt and
// the employer (and the planned FINEOS web id); after Cognito, the user,
// role and link, with the row marked succeeded; with force registration,
// after FINEOS, the web id on the link with the row marked succeeded.
package register

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/massgov/bulk-user-import/shared/cognito"
	"github.com/massgov/bulk-user-import/shared/fineos"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/pfml"
	"github.com/massgov/bulk-user-import/shared/retry"
)

// Steps, as they appear in logs and failures.
const (
	StepEmployer = "employer"
	StepCognito  = "cognito"
	StepDatabase = "database"
	StepFineos   = "fineos"
)

// Request is one pair to register. With Job set, it is that row of the
// job: its attempt is recorded, it must still be queued and agree with the
// request, and it is marked succeeded in the same transaction as the
// registration's last write.
type Request struct {
	Email             string // normalised
	FEIN              string // normalised
	ForceRegistration bool   // also register the user in FINEOS
	Job               string
	Row               int64
	ReceiveCount      int
}

// Errors about the request's row, found before any side effect.
var (
	ErrMessageMismatch = errors.New("the message's email, FEIN or force flag differ from the recorded row")
)

// RowFinalError says the row is already final: nothing to register. Row
// is the row as recorded (a failed row's dead letter may still be pending).
type RowFinalError struct {
	State string
	Row   jobs.RowInfo
}

func (e *RowFinalError) Error() string { return "the row is already " + e.State }

// Result says what a registration did.
type Result struct {
	Sub              string
	UserCreated      bool   // the Cognito user was created now
	FineosWebID      string // set when the pair is registered in FINEOS
	FineosRegistered bool   // the FINEOS call was made now
}

// FineosAPI is the FINEOS call registration needs.
type FineosAPI interface {
	CreateOrUpdateEmployerViewpointUser(ctx context.Context, u fineos.ViewpointUser) (fineos.Result, error)
}

var _ FineosAPI = (*fineos.Client)(nil)

// Rows is the job bookkeeping a registration reads and writes: the
// row's attempt and state in its first round trip, and its success in the
// same transaction as the registration's last write.
// *lifecycle.Lifecycle is one.
type Rows interface {
	QueueStartAttempt(b *pgx.Batch, job string, row int64, receiveCount int, into *jobs.RowInfo)
	QueueSucceed(b *pgx.Batch, job string, row int64)
	Pruned(ctx context.Context, job string) (bool, error)
}

var _ Rows = (*lifecycle.Lifecycle)(nil)

// Registrar runs the steps. Fineos may be nil when FINEOS is not configured:
// force-registration rows then fail with FINEOS_NOT_CONFIGURED. PFML and
// Rows must be on the same database: their statements share transactions.
type Registrar struct {
	PFML    *pfml.Store
	Rows    Rows
	Cognito *cognito.Client
	Fineos  FineosAPI
	Log     *slog.Logger
	// Retry paces the retries of a step's transient errors within one
	// attempt; the zero value is retry.DefaultPolicy.
	Retry retry.Policy
	// Observe, if set, hears of every step call: how long it took and its
	// error (nil on success).
	Observe func(step string, took time.Duration, err error)
}

// do runs one step, retrying its transient errors within the attempt's
// time, and returns a classified *Failure.
func (r *Registrar) do(ctx context.Context, log *slog.Logger, step string, fn func() error) error {
	tries := 0
	err := retry.Do(ctx, r.Retry, func(err error) bool { return Classify(step, err).Retryable() && !retry.IsContextError(err) },
		func() error {
			tries++
			start := time.Now()
			err := fn()
			if r.Observe != nil {
				r.Observe(step, time.Since(start), err)
			}
			return err
		},
		func(err error, wait time.Duration) {
			f := Classify(step, err)
			log.Warn("transient error; retrying the step", "step", step, "error_code", f.Code, "try", tries, "retry_in", wait.Round(time.Millisecond).String(), "err", err.Error())
		})
	if err != nil {
		return Classify(step, err)
	}
	return nil
}

// send runs one batch of statements about email as a step. Another user
// row holding the email comes back as *pfml.EmailConflictError.
func (r *Registrar) send(ctx context.Context, log *slog.Logger, step, email string, queue func(b *pgx.Batch)) error {
	return r.do(ctx, log, step, func() error {
		b := &pgx.Batch{}
		queue(b)
		if b.Len() == 0 {
			return nil
		}
		err := r.PFML.Send(ctx, b)
		if errors.Is(err, pfml.ErrEmailHeld) {
			return r.PFML.EmailConflict(ctx, email)
		}
		return err
	})
}

// Register runs every step for req, logging with log (which carries the
// row's attributes). The row's state, the employer and, for force
// registration, the employer's FINEOS id are checked before any side
// effect. Besides *Failure, it returns jobs.ErrRowNotFound,
// *RowFinalError and ErrMessageMismatch about the row.
func (r *Registrar) Register(ctx context.Context, log *slog.Logger, req Request) (Result, error) {
	lookup, err := r.start(ctx, log, req)
	if err != nil {
		return Result{}, err
	}
	emp, party, err := r.employer(req, lookup)
	if err != nil {
		return Result{}, err
	}
	user, err := r.cognitoUser(ctx, log, req, lookup)
	if err != nil {
		return Result{}, err
	}
	res := Result{Sub: user.Sub, UserCreated: user.Created}
	if !req.ForceRegistration {
		return res, r.link(ctx, log, req, user, emp)
	}
	return r.registerInFineos(ctx, log, req, res, user, emp, party, lookup)
}

// start is the first round trip: the row's attempt and state, the
// employer, the user row holding the email and the planned FINEOS web id.
// It checks the row: still queued, and as the message says.
func (r *Registrar) start(ctx context.Context, log *slog.Logger, req Request) (*pfml.Lookup, error) {
	var row jobs.RowInfo
	var lookup *pfml.Lookup
	if err := r.send(ctx, log, StepEmployer, req.Email, func(b *pgx.Batch) {
		if req.Job != "" {
			r.Rows.QueueStartAttempt(b, req.Job, req.Row, req.ReceiveCount, &row)
		}
		lookup = r.PFML.QueueLookup(b, req.Email, req.FEIN, req.ForceRegistration)
	}); err != nil {
		return nil, err
	}
	if req.Job == "" {
		return lookup, nil
	}
	switch {
	case row.State == "":
		// A job whose row data retention deleted is finished: its rows
		// were final. Anything else is an unknown row.
		if pruned, err := r.Rows.Pruned(ctx, req.Job); err != nil {
			return nil, Classify(StepDatabase, err)
		} else if pruned {
			return nil, &RowFinalError{State: "deleted by retention"}
		}
		return nil, fmt.Errorf("job %s row %d: %w", req.Job, req.Row, jobs.ErrRowNotFound)
	case row.State != jobs.Queued:
		return nil, &RowFinalError{State: row.State, Row: row}
	case row.Email != req.Email || row.FEIN != req.FEIN || row.ForceRegistration != req.ForceRegistration:
		return nil, ErrMessageMismatch
	}
	return lookup, nil
}

// employer checks the employer found, and for force registration that it
// and this worker can be registered in FINEOS; it returns the employer and
// its FINEOS party reference.
func (r *Registrar) employer(req Request, lookup *pfml.Lookup) (pfml.Employer, string, error) {
	emp, err := CheckEmployer(lookup, req.ForceRegistration)
	if err != nil || !req.ForceRegistration {
		return emp, "", err
	}
	switch {
	case r.Fineos == nil:
		return emp, "", fineosNotConfigured(errors.New("force registration needs FINEOS, and this worker has no FINEOS_CLIENT_* configuration"))
	case lookup.PlannedID == "":
		return emp, "", transient(StepDatabase, CodeInternal, errors.New("no FINEOS web id was planned for the pair"))
	}
	return emp, strconv.FormatInt(*emp.FineosEmployerID, 10), nil
}

// CheckEmployer is the registration's decision on a row's employer, made
// from its first round trip's lookup before any side effect: one employer
// has the FEIN, and for force registration it has a FINEOS id. The
// failures are permanent (EMPLOYER_NOT_FOUND, EMPLOYER_AMBIGUOUS,
// FINEOS_EMPLOYER_MISSING). splitter plan decides with it too.
func CheckEmployer(lookup *pfml.Lookup, force bool) (pfml.Employer, error) {
	emp, err := lookup.Employer()
	if err != nil {
		return emp, Classify(StepEmployer, err)
	}
	if force && emp.FineosEmployerID == nil {
		return emp, permanent(StepEmployer, CodeFineosEmployerMissing, errors.New("the employer has no fineos_employer_id, so it cannot be registered in FINEOS"))
	}
	return emp, nil
}

// CheckUser is the registration's decision on the user row that holds the
// email (nil: none), before Cognito: it must have a Cognito sub (else a
// permanent EMAIL_CONFLICT); it returns the sub the email's Cognito user
// must have ("": any).
func CheckUser(email string, u *pfml.ExistingUser) (wantSub string, err error) {
	if u == nil {
		return "", nil
	}
	if u.Sub == nil {
		return "", permanent(StepDatabase, CodeEmailConflict, u.Conflict(email, ""))
	}
	return *u.Sub, nil
}

// CheckCognitoUser is the registration's decision on the email's Cognito
// user as looked up (found or not), before it creates or changes anything:
// a user row that holds the email must be that Cognito user's (else a
// permanent EMAIL_CONFLICT). splitter plan decides with it too.
func CheckCognitoUser(email string, u *pfml.ExistingUser, cu cognito.User, found bool) error {
	wantSub, err := CheckUser(email, u)
	if err != nil {
		return err
	}
	return subConflict(email, u, cognito.CheckSub(wantSub, cu, found))
}

// subConflict turns EnsureUser's *cognito.SubMismatchError into the
// permanent EMAIL_CONFLICT naming the user row; other errors pass.
func subConflict(email string, u *pfml.ExistingUser, err error) error {
	var mismatch *cognito.SubMismatchError
	if errors.As(err, &mismatch) {
		return permanent(StepCognito, CodeEmailConflict, fmt.Errorf("%w: %v", u.Conflict(email, mismatch.Sub), mismatch))
	}
	return err
}

// cognitoUser creates or gets the Cognito user. A user row that holds the
// email must be the Cognito user's: its sub is checked before Cognito
// creates or changes anything.
func (r *Registrar) cognitoUser(ctx context.Context, log *slog.Logger, req Request, lookup *pfml.Lookup) (cognito.User, error) {
	wantSub, err := CheckUser(req.Email, lookup.User)
	if err != nil {
		return cognito.User{}, err
	}
	var user cognito.User
	if err := r.do(ctx, log, StepCognito, func() (err error) {
		user, err = r.Cognito.EnsureUser(ctx, req.Email, wantSub)
		return err
	}); err != nil {
		return user, subConflict(req.Email, lookup.User, err)
	}
	return user, nil
}

// link writes the user, role and link, and the row's success, in one
// transaction.
func (r *Registrar) link(ctx context.Context, log *slog.Logger, req Request, user cognito.User, emp pfml.Employer) error {
	return r.send(ctx, log, StepDatabase, req.Email, func(b *pgx.Batch) {
		r.PFML.QueueEnsureLeaveAdmin(b, user.Sub, req.Email, emp.ID)
		if req.Job != "" {
			r.Rows.QueueSucceed(b, req.Job, req.Row)
		}
	})
}

// registerInFineos registers the pair in FINEOS unless it is already, then
// writes the user, role and link, the web id, and the row's success in one
// transaction.
func (r *Registrar) registerInFineos(ctx context.Context, log *slog.Logger, req Request, res Result, user cognito.User,
	emp pfml.Employer, party string, lookup *pfml.Lookup) (Result, error) {
	webID, ensured, err := r.knownWebID(ctx, log, req, user, emp, lookup)
	if err != nil {
		return res, err
	}
	if webID == "" { // not registered before, by us or by PFML
		webID = lookup.PlannedID
		if err := r.do(ctx, log, StepFineos, func() error {
			_, err := r.Fineos.CreateOrUpdateEmployerViewpointUser(ctx, fineos.ViewpointUser{
				PartyReference: party, UserID: webID, Email: req.Email,
			})
			return err
		}); err != nil {
			return res, err
		}
		res.FineosRegistered = true
	}
	res.FineosWebID = webID
	if err := r.send(ctx, log, StepDatabase, req.Email, func(b *pgx.Batch) {
		if !ensured {
			r.PFML.QueueEnsureLeaveAdmin(b, user.Sub, req.Email, emp.ID)
		}
		if res.FineosRegistered {
			r.PFML.QueueRecordFineosWebID(b, user.Sub, req.Email, emp.ID, webID)
		}
		if req.Job != "" {
			r.Rows.QueueSucceed(b, req.Job, req.Row)
		}
	}); err != nil {
		return res, fmt.Errorf("after FINEOS accepted web id %s: %w", webID, err)
	}
	return res, nil
}

// knownWebID returns the pair's FINEOS web id if it is registered already
// ("" when not), and whether the user, role and link were written to find
// out. The first round trip knows when the email's user row was found (its
// sub is the Cognito user's) or the Cognito user is brand new (no row can
// have its sub). Otherwise (a user row under another spelling of the
// email, a retry after Cognito) the link is read by sub first.
func (r *Registrar) knownWebID(ctx context.Context, log *slog.Logger, req Request, user cognito.User, emp pfml.Employer, lookup *pfml.Lookup) (string, bool, error) {
	switch {
	case lookup.User != nil:
		return lookup.User.FineosWebID, false, nil
	case user.Created:
		return "", false, nil
	}
	var la *pfml.LeaveAdmin
	if err := r.send(ctx, log, StepDatabase, req.Email, func(b *pgx.Batch) {
		la = r.PFML.QueueEnsureLeaveAdmin(b, user.Sub, req.Email, emp.ID)
	}); err != nil {
		return "", false, err
	}
	return la.FineosWebID, true, nil
}
