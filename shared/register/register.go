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

// Registrar runs the steps. Fineos may be nil when FINEOS is not configured:
// force-registration rows then fail with FINEOS_NOT_CONFIGURED. PFML and
// Jobs must be on the same database: their statements share transactions.
type Registrar struct {
	PFML    *pfml.Store
	Jobs    *jobs.Store
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
	var res Result
	var row jobs.RowInfo
	var lookup *pfml.Lookup
	if err := r.send(ctx, log, StepEmployer, req.Email, func(b *pgx.Batch) {
		if req.Job != "" {
			r.Jobs.QueueStartAttempt(b, req.Job, req.Row, req.ReceiveCount, &row)
		}
		lookup = r.PFML.QueueLookup(b, req.Email, req.FEIN, req.ForceRegistration)
	}); err != nil {
		return res, err
	}
	if req.Job != "" {
		switch {
		case row.State == "":
			// A job whose row data retention deleted is finished: its rows
			// were final. Anything else is an unknown row.
			if pruned, err := r.Jobs.Pruned(ctx, req.Job); err != nil {
				return res, Classify(StepDatabase, err)
			} else if pruned {
				return res, &RowFinalError{State: "deleted by retention"}
			}
			return res, fmt.Errorf("job %s row %d: %w", req.Job, req.Row, jobs.ErrRowNotFound)
		case row.State != jobs.Queued:
			return res, &RowFinalError{State: row.State, Row: row}
		case row.Email != req.Email || row.FEIN != req.FEIN || row.ForceRegistration != req.ForceRegistration:
			return res, ErrMessageMismatch
		}
	}
	emp, err := lookup.Employer()
	if err != nil {
		return res, Classify(StepEmployer, err)
	}
	var party string
	if req.ForceRegistration {
		if emp.FineosEmployerID == nil {
			return res, permanent(StepEmployer, CodeFineosEmployerMissing, errors.New("the employer has no fineos_employer_id, so it cannot be registered in FINEOS"))
		}
		if r.Fineos == nil {
			return res, fineosNotConfigured(errors.New("force registration needs FINEOS, and this worker has no FINEOS_CLIENT_* configuration"))
		}
		if lookup.PlannedID == "" {
			return res, transient(StepDatabase, CodeInternal, errors.New("no FINEOS web id was planned for the pair"))
		}
		party = strconv.FormatInt(*emp.FineosEmployerID, 10)
	}

	// A user row that holds the email must be the Cognito user's: its sub
	// is checked before Cognito creates or changes anything.
	var wantSub string
	if u := lookup.User; u != nil {
		if u.Sub == nil {
			return res, permanent(StepDatabase, CodeEmailConflict, u.Conflict(req.Email, ""))
		}
		wantSub = *u.Sub
	}
	var user cognito.User
	if err := r.do(ctx, log, StepCognito, func() (err error) {
		user, err = r.Cognito.EnsureUser(ctx, req.Email, wantSub)
		return err
	}); err != nil {
		var mismatch *cognito.SubMismatchError
		if errors.As(err, &mismatch) {
			return res, permanent(StepCognito, CodeEmailConflict, fmt.Errorf("%w: %v", lookup.User.Conflict(req.Email, mismatch.Sub), mismatch))
		}
		return res, err
	}
	res.Sub, res.UserCreated = user.Sub, user.Created

	if !req.ForceRegistration {
		// The user, role and link, and the row's success, in one transaction.
		if err := r.send(ctx, log, StepDatabase, req.Email, func(b *pgx.Batch) {
			r.PFML.QueueEnsureLeaveAdmin(b, user.Sub, req.Email, emp.ID)
			if req.Job != "" {
				r.Jobs.QueueSucceed(b, req.Job, req.Row)
			}
		}); err != nil {
			return res, err
		}
		return res, nil
	}

	// Force registration: is the pair registered in FINEOS already? The
	// first round trip knows when the email's user row was found (its sub
	// is the Cognito user's) or the Cognito user is brand new (no row can
	// have its sub). Otherwise (a user row under another spelling of the
	// email, a retry after Cognito) the link is read by sub first.
	webID := ""
	ensured := false
	switch {
	case lookup.User != nil:
		webID = lookup.User.FineosWebID
	case user.Created:
	default:
		var la *pfml.LeaveAdmin
		if err := r.send(ctx, log, StepDatabase, req.Email, func(b *pgx.Batch) {
			la = r.PFML.QueueEnsureLeaveAdmin(b, user.Sub, req.Email, emp.ID)
		}); err != nil {
			return res, err
		}
		webID, ensured = la.FineosWebID, true
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
	// The user, role and link (unless written above), the web id on the
	// link, and the row's success, in one transaction.
	if err := r.send(ctx, log, StepDatabase, req.Email, func(b *pgx.Batch) {
		if !ensured {
			r.PFML.QueueEnsureLeaveAdmin(b, user.Sub, req.Email, emp.ID)
		}
		if res.FineosRegistered {
			r.PFML.QueueRecordFineosWebID(b, user.Sub, req.Email, emp.ID, webID)
		}
		if req.Job != "" {
			r.Jobs.QueueSucceed(b, req.Job, req.Row)
		}
	}); err != nil {
		return res, fmt.Errorf("after FINEOS accepted web id %s: %w", webID, err)
	}
	return res, nil
}
