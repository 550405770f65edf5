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

	"github.com/massgov/bulk-user-import/shared/cognito"
	"github.com/massgov/bulk-user-import/shared/fineos"
	"github.com/massgov/bulk-user-import/shared/pfml"
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
}

// Register runs every step for req. Preconditions (the employer exists and,
// for force registration, is known to FINEOS) are checked before any side
// effect.
func (r *Registrar) Register(ctx context.Context, req Request) (Result, error) {
	var res Result
	emp, err := r.PFML.EmployerByFEIN(ctx, req.FEIN)
	if err != nil {
		return res, Classify(StepEmployer, err)
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

	user, err := r.Cognito.EnsureUser(ctx, req.Email)
	if err != nil {
		return res, Classify(StepCognito, err)
	}
	res.Sub, res.UserCreated = user.Sub, user.Created

	la, err := r.PFML.EnsureLeaveAdmin(ctx, user.Sub, req.Email, emp.ID, req.ForceRegistration)
	if err != nil {
		return res, Classify(StepDatabase, err)
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
	if _, err := r.Fineos.CreateOrUpdateEmployerViewpointUser(ctx, fineos.ViewpointUser{
		PartyReference: party, UserID: la.PlannedID, Email: req.Email,
	}); err != nil {
		return res, Classify(StepFineos, err)
	}
	if err := r.PFML.RecordFineosWebID(ctx, la.UserID, emp.ID, la.PlannedID); err != nil {
		return res, Classify(StepDatabase, fmt.Errorf("after FINEOS accepted web id %s: %w", la.PlannedID, err))
	}
	res.FineosWebID, res.FineosRegistered = la.PlannedID, true
	return res, nil
}
