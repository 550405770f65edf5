package fineosstub

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/shared/fineos"
)

func token(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+TokenPath, strings.NewReader("grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	o := DefaultOptions()
	req.SetBasicAuth(o.ClientID, o.ClientSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("token: %v", err)
	}
	return tok.AccessToken
}

func post(t *testing.T, srv *httptest.Server, tok, userid, body string) int {
	t.Helper()
	status, err := send(srv, tok, userid, body)
	if err != nil {
		t.Fatal(err)
	}
	return status
}

// send posts a provisioning call and returns the answer's status.
func send(srv *httptest.Server, tok, userid, body string) (int, error) {
	req, _ := http.NewRequest(http.MethodPost, srv.URL+IntegrationPath+fineos.ProvisioningPath, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("userid", userid)
	req.Header.Set("Content-Type", "application/xml; charset=utf-8")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

const good = `<p:CreateOrUpdateEmployerViewpointUserRequest xmlns:p="` + fineos.Namespace + `">` +
	`<partyReference>1</partyReference><userID>u1</userID><fullName>Leave Administrator</fullName>` +
	`<emailAddress>a@b.co</emailAddress><phone><contactAreaCode></contactAreaCode><contactExtensionCode/>` +
	`<contactInternationalCode/><contactNumber/></phone><userRole>AllPermissions</userRole><enabled>true</enabled>` +
	`</p:CreateOrUpdateEmployerViewpointUserRequest>`

func TestStubIsStrict(t *testing.T) {
	t.Parallel()
	stub := New(DefaultOptions())
	srv := httptest.NewServer(stub)
	defer srv.Close()
	tok := token(t, srv)
	uid := DefaultOptions().UserID
	tests := []struct {
		name, tok, userid, body string
		want                    int
	}{
		{"good", tok, uid, good, 200},
		{"bad token", "nope", uid, good, 401},
		{"bad userid", tok, "someone", good, 403},
		{"wrong namespace", tok, uid, strings.Replace(good, fineos.Namespace, "urn:other", 1), 400},
		{"wrong order", tok, uid, strings.Replace(good, "<partyReference>1</partyReference><userID>u1</userID>", "<userID>u1</userID><partyReference>1</partyReference>", 1), 400},
		{"missing phone", tok, uid, strings.Replace(good, "<phone><contactAreaCode></contactAreaCode><contactExtensionCode/><contactInternationalCode/><contactNumber/></phone>", "", 1), 400},
		{"empty email", tok, uid, strings.Replace(good, "a@b.co", "", 1), 422},
		{"not xml", tok, uid, "{}", 400},
	}
	for _, tt := range tests {
		if got := post(t, srv, tt.tok, tt.userid, tt.body); got != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, got, tt.want)
		}
	}
	if n := len(stub.Users()); n != 1 {
		t.Fatalf("%d users created, want 1", n)
	}
	if n := len(stub.Calls()); n != len(tests) {
		t.Fatalf("%d calls recorded, want %d", n, len(tests))
	}
}

func TestHoldKeepsTheNextCallUntilReleased(t *testing.T) {
	t.Parallel()
	stub := New(DefaultOptions())
	srv := httptest.NewServer(stub)
	defer srv.Close()
	tok := token(t, srv)
	uid := DefaultOptions().UserID
	held := stub.Hold()
	first := make(chan error, 1)
	go func() {
		status, err := send(srv, tok, uid, good)
		if err == nil && status != 200 {
			err = fmt.Errorf("status %d", status)
		}
		first <- err
	}()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the call was not held")
	}
	// The gate holds one call: the next goes through, and the held one has
	// not taken effect.
	if got := post(t, srv, tok, uid, strings.Replace(good, "u1", "u2", 1)); got != 200 {
		t.Fatalf("second call: status %d", got)
	}
	if n := len(stub.Users()); n != 1 {
		t.Fatalf("%d users while the first call is held, want 1", n)
	}
	stub.Release()
	if err := <-first; err != nil {
		t.Fatalf("held call: %v", err)
	}
	if n := len(stub.Users()); n != 2 {
		t.Fatalf("%d users after the release, want 2", n)
	}
}
