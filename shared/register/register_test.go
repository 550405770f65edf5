package register_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cip "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider"
	"github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider/types"

	"github.com/massgov/bulk-user-import/localstack/fineosstub"
	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/localstack/stacktest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/register"
	"github.com/massgov/bulk-user-import/shared/retry"
)

type fixture struct {
	stack *stacktest.Stack
	reg   *register.Registrar
	cip   *cip.Client
}

func setup(t *testing.T) fixture {
	t.Helper()
	s := stacktest.New(t, stacktest.Options{})
	s.AddEmployer(t, "123456789", 1001)
	s.AddEmployer(t, "987654321", 1002)
	s.AddEmployer(t, "111222333", 0)
	return fixture{stack: s, cip: awsconf.Cognito(s.AWS), reg: s.Registrar(t)}
}

func (f fixture) cognitoUser(t *testing.T, email string) *cip.AdminGetUserOutput {
	t.Helper()
	out, err := f.cip.AdminGetUser(context.Background(), &cip.AdminGetUserInput{UserPoolId: &f.stack.Resources.UserPoolID, Username: aws.String(email)})
	var nf *types.UserNotFoundException
	if errors.As(err, &nf) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func wantFailure(t *testing.T, err error, code string, permanent bool) {
	t.Helper()
	var f *register.Failure
	if !errors.As(err, &f) || f.Code != code || f.Permanent != permanent {
		t.Fatalf("err = %v (%+v), want %s permanent=%v", err, f, code, permanent)
	}
}

func TestRegisterWithoutFineos(t *testing.T) {
	t.Parallel()
	f := setup(t)
	res, err := f.reg.Register(context.Background(), logging.Discard(), register.Request{Email: "a@b.co", FEIN: "123456789"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.UserCreated || res.FineosRegistered || res.FineosWebID != "" {
		t.Fatalf("result %+v", res)
	}
	u := f.cognitoUser(t, "a@b.co")
	if u == nil || u.UserStatus != types.UserStatusTypeConfirmed {
		t.Fatalf("cognito user %+v", u)
	}
	if n := pgtest.Count(t, f.stack.Pool, `SELECT count(*) FROM "user" u JOIN link_user_role r USING (user_id) JOIN link_user_leave_administrator l USING (user_id)
		WHERE u.sub_id = $1 AND u.email_address = 'a@b.co' AND r.role_id = 3 AND l.fineos_web_id IS NULL`, res.Sub); n != 1 {
		t.Fatalf("database rows: %d", n)
	}
	if len(f.stack.Fineos.Calls()) != 0 {
		t.Fatal("FINEOS called without force registration")
	}
}

func TestRegisterWithFineosRecordsTheWebID(t *testing.T) {
	t.Parallel()
	f := setup(t)
	res, err := f.reg.Register(context.Background(), logging.Discard(), register.Request{Email: "a@b.co", FEIN: "123456789", ForceRegistration: true})
	if err != nil {
		t.Fatal(err)
	}
	users := f.stack.Fineos.Users()
	if len(users) != 1 || users[0].UserID != res.FineosWebID || users[0].PartyReference != "1001" || users[0].Email != "a@b.co" {
		t.Fatalf("FINEOS users %+v, result %+v", users, res)
	}
	if n := pgtest.Count(t, f.stack.Pool, `SELECT count(*) FROM link_user_leave_administrator WHERE fineos_web_id = $1`, res.FineosWebID); n != 1 {
		t.Fatal("web id not on the link")
	}
	again, err := f.reg.Register(context.Background(), logging.Discard(), register.Request{Email: "a@b.co", FEIN: "123456789", ForceRegistration: true})
	if err != nil || again.FineosRegistered || again.FineosWebID != res.FineosWebID {
		t.Fatalf("second registration: %+v %v", again, err)
	}
	if n := len(f.stack.Fineos.Calls()); n != 1 {
		t.Fatalf("%d FINEOS calls, want 1", n)
	}
}

func TestPreconditionsFailBeforeAnySideEffect(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	_, err := f.reg.Register(ctx, logging.Discard(), register.Request{Email: "x@b.co", FEIN: "000000001"})
	wantFailure(t, err, register.CodeEmployerNotFound, true)
	_, err = f.reg.Register(ctx, logging.Discard(), register.Request{Email: "y@b.co", FEIN: "111222333", ForceRegistration: true})
	wantFailure(t, err, register.CodeFineosEmployerMissing, true)
	noFineos := *f.reg
	noFineos.Fineos = nil
	_, err = noFineos.Register(ctx, logging.Discard(), register.Request{Email: "z@b.co", FEIN: "123456789", ForceRegistration: true})
	wantFailure(t, err, register.CodeFineosNotConfigured, false) // systemic: the breaker pauses such rows
	for _, e := range []string{"x@b.co", "y@b.co", "z@b.co"} {
		if f.cognitoUser(t, e) != nil {
			t.Fatalf("Cognito user %s created before a precondition failed", e)
		}
	}
	if n := pgtest.Count(t, f.stack.Pool, `SELECT count(*) FROM "user"`); n != 0 {
		t.Fatalf("%d users created", n)
	}
}

func TestFineosFailuresAreClassifiedAndRetriesKeepTheWebID(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.reg.Retry = retry.Policy{MaxElapsed: -1} // one call per attempt: see each failure
	ctx := context.Background()
	req := register.Request{Email: "a@b.co", FEIN: "987654321", ForceRegistration: true}

	f.stack.Fineos.InjectFaults(fineosstub.Fault{Status: http.StatusServiceUnavailable})
	_, err := f.reg.Register(ctx, logging.Discard(), req)
	wantFailure(t, err, register.CodeFineosUnavailable, false)

	f.stack.Fineos.InjectFaults(fineosstub.Fault{Status: http.StatusGatewayTimeout, AfterApply: true})
	_, err = f.reg.Register(ctx, logging.Discard(), req)
	wantFailure(t, err, register.CodeFineosUnavailable, false)

	res, err := f.reg.Register(ctx, logging.Discard(), req)
	if err != nil {
		t.Fatal(err)
	}
	users := f.stack.Fineos.Users()
	if len(users) != 1 || users[0].UserID != res.FineosWebID || users[0].Updates != 1 {
		t.Fatalf("FINEOS users %+v (web id %s)", users, res.FineosWebID)
	}
	for _, c := range f.stack.Fineos.Calls() {
		if c.UserID != res.FineosWebID {
			t.Fatalf("a retry used another web id: %s vs %s", c.UserID, res.FineosWebID)
		}
	}

	f.stack.Fineos.InjectFaults(fineosstub.Fault{Status: http.StatusUnprocessableEntity})
	_, err = f.reg.Register(ctx, logging.Discard(), register.Request{Email: "b@b.co", FEIN: "987654321", ForceRegistration: true})
	wantFailure(t, err, register.CodeFineosRejected, true)
}

func TestConcurrentRegistrationsOfOneEmailCreateEverythingOnce(t *testing.T) {
	t.Parallel()
	f := setup(t)
	reqs := []register.Request{
		{Email: "same@b.co", FEIN: "123456789", ForceRegistration: true},
		{Email: "same@b.co", FEIN: "987654321", ForceRegistration: true},
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() {
			_, err := f.reg.Register(context.Background(), logging.Discard(), reqs[i%2])
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := pgtest.Count(t, f.stack.Pool, `SELECT count(*) FROM "user"`); n != 1 {
		t.Fatalf("%d users", n)
	}
	if n := pgtest.Count(t, f.stack.Pool, `SELECT count(*) FROM link_user_leave_administrator WHERE fineos_web_id IS NOT NULL`); n != 2 {
		t.Fatalf("%d registered links, want 2", n)
	}
	byPair := map[string]map[string]bool{}
	for _, u := range f.stack.Fineos.Users() {
		if byPair[u.PartyReference] == nil {
			byPair[u.PartyReference] = map[string]bool{}
		}
		byPair[u.PartyReference][u.UserID] = true
	}
	if len(byPair) != 2 || len(byPair["1001"]) != 1 || len(byPair["1002"]) != 1 {
		t.Fatalf("FINEOS users by employer: %v", byPair)
	}
}

func TestEmailConflictIsPermanent(t *testing.T) {
	t.Parallel()
	f := setup(t)
	if _, err := f.stack.Pool.Exec(context.Background(), `INSERT INTO "user" (user_id, sub_id, email_address) VALUES (gen_random_uuid(), 'legacy', 'old@b.co')`); err != nil {
		t.Fatal(err)
	}
	_, err := f.reg.Register(context.Background(), logging.Discard(), register.Request{Email: "old@b.co", FEIN: "123456789"})
	wantFailure(t, err, register.CodeEmailConflict, true)
	if f.cognitoUser(t, "old@b.co") != nil {
		t.Fatal("a Cognito user was created for an email that another PFML user holds")
	}
	if _, err := f.stack.Pool.Exec(context.Background(), `INSERT INTO "user" (user_id, email_address) VALUES (gen_random_uuid(), 'nosub@b.co')`); err != nil {
		t.Fatal(err)
	}
	_, err = f.reg.Register(context.Background(), logging.Discard(), register.Request{Email: "nosub@b.co", FEIN: "123456789", ForceRegistration: true})
	wantFailure(t, err, register.CodeEmailConflict, true)
	if f.cognitoUser(t, "nosub@b.co") != nil || len(f.stack.Fineos.Calls()) != 0 {
		t.Fatal("side effects for a conflicting email")
	}
}

func TestAnExistingUserRowWithTheSameSubIsReused(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	// A PFML user registered before the import, with its Cognito user.
	first, err := f.reg.Register(ctx, logging.Discard(), register.Request{Email: "known@b.co", FEIN: "123456789"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.reg.Register(ctx, logging.Discard(), register.Request{Email: "known@b.co", FEIN: "987654321", ForceRegistration: true})
	if err != nil || res.Sub != first.Sub || res.UserCreated || !res.FineosRegistered {
		t.Fatalf("second employer: %+v %v", res, err)
	}
	if n := pgtest.Count(t, f.stack.Pool, `SELECT count(*) FROM "user"`); n != 1 {
		t.Fatalf("%d users", n)
	}
}

func TestTransientErrorsAreRetriedWithinTheAttempt(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.reg.Retry = retry.Policy{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, MaxElapsed: 10 * time.Second}
	var mu sync.Mutex
	calls := map[string]int{}
	f.reg.Observe = func(step string, _ time.Duration, _ error) {
		mu.Lock()
		calls[step]++
		mu.Unlock()
	}
	f.stack.Fineos.InjectFaults(fineosstub.Fault{Status: http.StatusServiceUnavailable}, fineosstub.Fault{Status: http.StatusGatewayTimeout, AfterApply: true})
	res, err := f.reg.Register(context.Background(), logging.Discard(), register.Request{Email: "a@b.co", FEIN: "123456789", ForceRegistration: true})
	if err != nil {
		t.Fatal(err)
	}
	if calls[register.StepFineos] != 3 {
		t.Fatalf("FINEOS step called %d times, want 3", calls[register.StepFineos])
	}
	if users := f.stack.Fineos.Users(); len(users) != 1 || users[0].UserID != res.FineosWebID {
		t.Fatalf("FINEOS users %+v", users)
	}
	// A permanent error is not retried.
	f.stack.Fineos.InjectFaults(fineosstub.Fault{Status: http.StatusUnprocessableEntity})
	_, err = f.reg.Register(context.Background(), logging.Discard(), register.Request{Email: "b@b.co", FEIN: "123456789", ForceRegistration: true})
	wantFailure(t, err, register.CodeFineosRejected, true)
	if calls[register.StepFineos] != 4 {
		t.Fatalf("FINEOS step called %d times in all, want 4", calls[register.StepFineos])
	}
}

func TestAUserRowUnderAnotherSpellingIsFoundByItsSub(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	if _, err := f.reg.Register(ctx, logging.Discard(), register.Request{Email: "mixed@b.co", FEIN: "123456789"}); err != nil {
		t.Fatal(err)
	}
	// PFML holds the email in another case, and registered the link in FINEOS itself.
	if _, err := f.stack.Pool.Exec(ctx, `UPDATE "user" SET email_address = 'Mixed@B.co'`); err != nil {
		t.Fatal(err)
	}
	if _, err := f.stack.Pool.Exec(ctx, `UPDATE link_user_leave_administrator SET fineos_web_id = 'pfml_leave_admin_by_pfml'`); err != nil {
		t.Fatal(err)
	}
	res, err := f.reg.Register(ctx, logging.Discard(), register.Request{Email: "mixed@b.co", FEIN: "123456789", ForceRegistration: true})
	if err != nil || res.FineosRegistered || res.FineosWebID != "pfml_leave_admin_by_pfml" {
		t.Fatalf("result %+v, %v", res, err)
	}
	if n := len(f.stack.Fineos.Calls()); n != 0 {
		t.Fatalf("%d FINEOS calls for a registered pair", n)
	}
	if n := pgtest.Count(t, f.stack.Pool, `SELECT count(*) FROM "user"`); n != 1 {
		t.Fatalf("%d users", n)
	}
}
