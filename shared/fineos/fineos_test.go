package fineos_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/localstack/fineosstub"
	"github.com/massgov/bulk-user-import/shared/budget"
	"github.com/massgov/bulk-user-import/shared/fineos"
)

func setup(t *testing.T) (*fineosstub.Stub, fineos.Config, *fineos.Client) {
	t.Helper()
	opts := fineosstub.DefaultOptions()
	stub := fineosstub.New(opts)
	srv := httptest.NewServer(stub)
	t.Cleanup(srv.Close)
	cfg := opts.Config(srv.URL)
	c, err := fineos.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return stub, cfg, c
}

var alice = fineos.ViewpointUser{PartyReference: "1001", UserID: "pfml_leave_admin_1", Email: "alice@example.com"}

func TestProvisionIsAcceptedByStrictStubAndTokenIsCached(t *testing.T) {
	t.Parallel()
	stub, _, c := setup(t)
	ctx := context.Background()
	res, err := c.CreateOrUpdateEmployerViewpointUser(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if res.UserID != alice.UserID || res.PartyReference != "1001" || res.AlreadyExisted || res.UserOID == "" {
		t.Fatalf("result %+v", res)
	}
	res, err = c.CreateOrUpdateEmployerViewpointUser(ctx, alice)
	if err != nil || !res.AlreadyExisted {
		t.Fatalf("second call: %+v, %v", res, err)
	}
	if st := stub.Stats(); st.TokensIssued != 1 || st.Created != 1 || st.Updated != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestExpiredTokenIsRenewedOnce(t *testing.T) {
	t.Parallel()
	stub, _, c := setup(t)
	ctx := context.Background()
	if _, err := c.CreateOrUpdateEmployerViewpointUser(ctx, alice); err != nil {
		t.Fatal(err)
	}
	stub.ExpireTokens()
	if _, err := c.CreateOrUpdateEmployerViewpointUser(ctx, alice); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if got := stub.Stats().TokensIssued; got != 2 {
		t.Fatalf("tokens issued %d, want 2", got)
	}
}

func TestErrorsAreTyped(t *testing.T) {
	t.Parallel()
	stub, cfg, c := setup(t)
	ctx := context.Background()

	stub.InjectFaults(fineosstub.Fault{Status: http.StatusServiceUnavailable})
	_, err := c.CreateOrUpdateEmployerViewpointUser(ctx, alice)
	var he *fineos.HTTPError
	if !errors.As(err, &he) || he.Status != 503 || he.Op != "provision" {
		t.Fatalf("err = %v, want HTTP 503", err)
	}

	bad := alice
	bad.PartyReference = ""
	_, err = c.CreateOrUpdateEmployerViewpointUser(ctx, bad)
	if !errors.As(err, &he) || he.Status != http.StatusUnprocessableEntity || !strings.Contains(he.Body, "partyReference") {
		t.Fatalf("err = %v, want 422 naming partyReference", err)
	}

	cfg.ClientSecret = "wrong"
	wrong, err := fineos.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = wrong.CreateOrUpdateEmployerViewpointUser(ctx, alice)
	if !errors.As(err, &he) || he.Op != "token" || he.Status != http.StatusUnauthorized {
		t.Fatalf("err = %v, want token 401", err)
	}
	if strings.Contains(err.Error(), "wrong") || strings.Contains(err.Error(), "local-secret") {
		t.Fatalf("error leaks the secret: %v", err)
	}
}

// An error answer that repeats the request keeps its status and code; the
// request's values are left out and other emails and FEINs masked.
func TestErrorBodyEchoingTheRequestIsRedacted(t *testing.T) {
	t.Parallel()
	stub, _, c := setup(t)
	ctx := context.Background()
	stub.InjectFaults(fineosstub.Fault{Status: http.StatusUnprocessableEntity, Echo: true})
	u := fineos.ViewpointUser{PartyReference: "7712001", UserID: "pfml_leave_admin_echo", Email: "Quentin.Echo@Example.org"}
	_, err := c.CreateOrUpdateEmployerViewpointUser(ctx, u)
	var he *fineos.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusUnprocessableEntity || he.Code != "VALIDATION_ERROR" {
		t.Fatalf("err = %#v, want 422 with code VALIDATION_ERROR", err)
	}
	msg := strings.ToLower(err.Error())
	for _, leak := range []string{"quentin", "echo@", "7712001", "pfml_leave_admin_echo"} {
		if strings.Contains(msg, leak) {
			t.Errorf("the error repeats %q: %v", leak, err)
		}
	}
	if !strings.Contains(err.Error(), "[request value]") {
		t.Errorf("the echoed values are not marked: %v", err)
	}

	// A body naming someone else (not the request) is masked.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/token") {
			w.Write([]byte(`{"access_token":"t","token_type":"Bearer","expires_in":60}`))
			return
		}
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte(`{"code":"DUPLICATE","message":"held by other.person@example.com of employer 12-3456789"}`))
	}))
	defer srv.Close()
	other, err := fineos.New(fineos.Config{IntegrationServicesURL: srv.URL, OAuth2URL: srv.URL + "/token", ClientID: "id", ClientSecret: "s", UserID: "u"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.CreateOrUpdateEmployerViewpointUser(ctx, alice)
	if !errors.As(err, &he) || he.Code != "DUPLICATE" || strings.Contains(err.Error(), "other.person") || strings.Contains(err.Error(), "3456789") ||
		!strings.Contains(err.Error(), "o***@***.com") {
		t.Fatalf("err = %v, want code DUPLICATE and the body masked", err)
	}
}

func TestRetryAfterAppliedFaultUpdatesTheSameUser(t *testing.T) {
	t.Parallel()
	stub, _, c := setup(t)
	ctx := context.Background()
	stub.InjectFaults(fineosstub.Fault{Status: http.StatusGatewayTimeout, AfterApply: true})
	if _, err := c.CreateOrUpdateEmployerViewpointUser(ctx, alice); err == nil {
		t.Fatal("want the injected 504")
	}
	res, err := c.CreateOrUpdateEmployerViewpointUser(ctx, alice)
	if err != nil || !res.AlreadyExisted {
		t.Fatalf("retry: %+v, %v", res, err)
	}
	if users := stub.Users(); len(users) != 1 {
		t.Fatalf("%d FINEOS users, want 1", len(users))
	}
}

func TestResponseErrorInBody(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/token") {
			w.Write([]byte(`{"access_token":"t","token_type":"Bearer","expires_in":60}`))
			return
		}
		w.Write([]byte(`<p:CreateOrUpdateEmployerViewpointUserResponse xmlns:p="` + fineos.Namespace +
			`"><errorCode>1001</errorCode><errorMessage>party not found</errorMessage></p:CreateOrUpdateEmployerViewpointUserResponse>`))
	}))
	defer srv.Close()
	c, err := fineos.New(fineos.Config{IntegrationServicesURL: srv.URL, OAuth2URL: srv.URL + "/token", ClientID: "a", ClientSecret: "b", UserID: "u"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateOrUpdateEmployerViewpointUser(context.Background(), alice)
	var re *fineos.ResponseError
	if !errors.As(err, &re) || re.Code != "1001" || re.Message != "party not found" {
		t.Fatalf("err = %v", err)
	}
}

func TestTimeoutIsAnError(t *testing.T) {
	t.Parallel()
	stub, _, c := setup(t)
	stub.SetLatency(200 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.CreateOrUpdateEmployerViewpointUser(ctx, alice); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

func TestValidateNamesEveryMissingVariable(t *testing.T) {
	t.Parallel()
	err := fineos.Config{OAuth2URL: "ftp://x"}.Validate()
	for _, want := range []string{"FINEOS_CLIENT_INTEGRATION_SERVICES_API_URL is not set", "FINEOS_CLIENT_OAUTH2_URL is not an http(s) URL",
		"FINEOS_CLIENT_OAUTH2_CLIENT_ID", "FINEOS_CLIENT_OAUTH2_CLIENT_SECRET", "FINEOS_CLIENT_WSCOMPOSER_USER_ID"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %s", err, want)
		}
	}
}

func TestRateLimitPacesProvisioningCalls(t *testing.T) {
	t.Parallel()
	stub, _, c := setup(t)
	l := budget.New(budget.Fineos, 0, 20)
	defer l.Close()
	c.SetLimit(l)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	for i := 0; ctx.Err() == nil; i++ {
		u := alice
		u.UserID = fmt.Sprintf("pfml_leave_admin_%d", i)
		if _, err := c.CreateOrUpdateEmployerViewpointUser(ctx, u); err != nil {
			break
		}
	}
	if n := stub.Stats().Calls; n > 11 || n < 3 {
		t.Fatalf("%d calls in 500ms at 20/s", n)
	}

	// FINEOS's throttling is reported to the limit.
	stub.InjectFaults(fineosstub.Fault{Status: http.StatusTooManyRequests})
	if _, err := c.CreateOrUpdateEmployerViewpointUser(context.Background(), alice); err == nil {
		t.Fatal("want the injected 429")
	}
	if st := l.State(); st.Throttled != 1 {
		t.Fatalf("throttles reported: %+v", st)
	}
}
