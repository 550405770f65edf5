// Package register performs the registration of one (email, FEIN) pair in
// Cognito, the PFML database and, with force registration, FINEOS. Each
// step is idempotent and safe when the same pair, or the same email, is
// registered by several workers at once. Errors come back as *Failure,
// classified as permanent or transient in one place (classify.go).
package register

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/massgov/bulk-user-import/shared/cognito"
	"github.com/massgov/bulk-user-import/shared/fineos"
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

// Request is one pair to register.
type Request struct {
	Email             string // normalised
	FEIN              string // normalised
	ForceRegistration bool   // also register the user in FINEOS
}

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
// force-registration rows then fail with FINEOS_NOT_CONFIGURED.
type Registrar struct {
	PFML    *pfml.Store
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
	err := retry.Do(ctx, r.Retry, func(err error) bool { return !Classify(step, err).Permanent && !retry.IsContextError(err) },
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

// Register runs every step for req, logging with log (which carries the
// row's attributes). Preconditions (the employer exists and, for force
// registration, is known to FINEOS) are checked before any side effect.
func (r *Registrar) Register(ctx context.Context, log *slog.Logger, req Request) (Result, error) {
	var res Result
	var emp pfml.Employer
	if err := r.do(ctx, log, StepEmployer, func() (err error) {
		emp, err = r.PFML.EmployerByFEIN(ctx, req.FEIN)
		return err
	}); err != nil {
		return res, err
	}
	var party string
	if req.ForceRegistration {
		if emp.FineosEmployerID == nil {
			return res, permanent(StepEmployer, CodeFineosEmployerMissing, errors.New("the employer has no fineos_employer_id, so it cannot be registered in FINEOS"))
		}
		if r.Fineos == nil {
			return res, permanent(StepFineos, CodeFineosNotConfigured, errors.New("force registration needs FINEOS, and this worker has no FINEOS_CLIENT_* configuration"))
		}
		party = strconv.FormatInt(*emp.FineosEmployerID, 10)
	}

	var user cognito.User
	if err := r.do(ctx, log, StepCognito, func() (err error) {
		user, err = r.Cognito.EnsureUser(ctx, req.Email)
		return err
	}); err != nil {
		return res, err
	}
	res.Sub, res.UserCreated = user.Sub, user.Created

	var la pfml.LeaveAdmin
	if err := r.do(ctx, log, StepDatabase, func() (err error) {
		la, err = r.PFML.EnsureLeaveAdmin(ctx, user.Sub, req.Email, emp.ID, req.ForceRegistration)
		return err
	}); err != nil {
		return res, err
	}
	if !req.ForceRegistration {
		return res, nil
	}
	if la.FineosWebID != "" {
		res.FineosWebID = la.FineosWebID // registered before, by us or by PFML
		return res, nil
	}
	if la.PlannedID == "" {
		return res, Classify(StepDatabase, errors.New("no FINEOS web id was planned for the link"))
	}
	if err := r.do(ctx, log, StepFineos, func() error {
		_, err := r.Fineos.CreateOrUpdateEmployerViewpointUser(ctx, fineos.ViewpointUser{
			PartyReference: party, UserID: la.PlannedID, Email: req.Email,
		})
		return err
	}); err != nil {
		return res, err
	}
	if err := r.do(ctx, log, StepDatabase, func() error {
		if err := r.PFML.RecordFineosWebID(ctx, la.UserID, emp.ID, la.PlannedID); err != nil {
			return fmt.Errorf("after FINEOS accepted web id %s: %w", la.PlannedID, err)
		}
		return nil
	}); err != nil {
		return res, err
	}
	res.FineosWebID, res.FineosRegistered = la.PlannedID, true
	return res, nil
}
