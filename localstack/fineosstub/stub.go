// Package fineosstub is a stand-in for FINEOS in tests and local runs: a real
// HTTP server speaking the OAuth2 token endpoint and the employer viewpoint
// user provisioning call, strict about what FINEOS is strict about (bearer
// token, userid header, XML namespace, element order, required fields). It
// records every call and can inject status codes and latency, and hold a
// call until a test releases it.
package fineosstub

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/massgov/bulk-user-import/shared/fineos"
)

// Paths served.
const (
	TokenPath       = "/oauth2/token"
	IntegrationPath = "/integration/"
	AdminPath       = "/__stub/"
)

// Options configure the credentials the stub accepts.
type Options struct {
	ClientID     string
	ClientSecret string
	UserID       string        // expected in the userid header
	TokenTTL     time.Duration // default one hour
}

// DefaultOptions are the credentials used by the local stack.
func DefaultOptions() Options {
	return Options{ClientID: "bulk-import-local", ClientSecret: "local-secret", UserID: "PFML_BULK_IMPORT", TokenTTL: time.Hour}
}

// Config returns the client configuration for a stub served at baseURL.
func (o Options) Config(baseURL string) fineos.Config {
	baseURL = strings.TrimSuffix(baseURL, "/")
	return fineos.Config{
		IntegrationServicesURL: baseURL + IntegrationPath,
		OAuth2URL:              baseURL + TokenPath,
		ClientID:               o.ClientID,
		ClientSecret:           o.ClientSecret,
		UserID:                 o.UserID,
	}
}

// User is a provisioned employer viewpoint user.
type User struct {
	UserID         string `json:"user_id"`
	PartyReference string `json:"party_reference"`
	Email          string `json:"email"`
	OID            string `json:"oid"`
	Updates        int    `json:"updates"`
}

// Call is one provisioning request, accepted or not.
type Call struct {
	UserID         string `json:"user_id"`
	PartyReference string `json:"party_reference"`
	Email          string `json:"email"`
	Status         int    `json:"status"`
	Error          string `json:"error,omitempty"`

	body []byte // the request as sent, for a fault that echoes it
}

// Fault makes one provisioning call fail with Status. With AfterApply the
// user is created or updated first, as when FINEOS times out after doing
// the work: the retry must then not create a second user. With Echo the
// answer is FINEOS's error response (errorCode VALIDATION_ERROR) whose
// message repeats the whole request, as some FINEOS errors do.
// With Email the fault waits for a call about that email (any case).
type Fault struct {
	Status     int    `json:"status"`
	AfterApply bool   `json:"after_apply"`
	Echo       bool   `json:"echo,omitempty"`
	Email      string `json:"email,omitempty"`
}

// Stats counts what the stub saw.
type Stats struct {
	TokenRequests int `json:"token_requests"`
	TokensIssued  int `json:"tokens_issued"`
	Calls         int `json:"calls"`
	Created       int `json:"created"`
	Updated       int `json:"updated"`
	FaultsApplied int `json:"faults_applied"`
}

// Stub is the fake FINEOS. Its zero value is not usable; call New.
type Stub struct {
	opts Options

	mu        sync.Mutex
	tokens    map[string]time.Time
	users     map[string]*User
	calls     []Call
	stats     Stats
	faults    []Fault
	faultRate float64
	rateFault Fault
	latency   time.Duration
	oid       int
	refuse    bool  // the client's credentials are refused (a secret being rotated)
	gate      *gate // holds the next provisioning call (Hold)
}

// gate holds one provisioning call until it is released.
type gate struct {
	taken   bool          // a call is (or was) held at it
	held    chan struct{} // closed when a call waits at it
	release chan struct{} // closed by Release
}

// New returns a stub accepting the given credentials.
func New(opts Options) *Stub {
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = time.Hour
	}
	return &Stub{opts: opts, tokens: map[string]time.Time{}, users: map[string]*User{}}
}

// InjectFaults queues faults, applied one per provisioning call.
func (s *Stub) InjectFaults(faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, faults...)
}

// SetFaultRate makes a share (0..1) of provisioning calls fail with f.
func (s *Stub) SetFaultRate(rate float64, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faultRate, s.rateFault = rate, f
}

// SetLatency delays every answer by d.
func (s *Stub) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// Hold makes the next provisioning call wait, once its request is checked
// and before it takes effect, until Release. The channel returned is
// closed when a call waits at the gate. A held call whose client goes away
// ends there, without taking effect.
func (s *Stub) Hold() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gate = &gate{held: make(chan struct{}), release: make(chan struct{})}
	return s.gate.held
}

// Release lets the held call go on, and removes the gate (a gate that held
// nothing yet holds nothing).
func (s *Stub) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate != nil {
		close(s.gate.release)
		s.gate = nil
	}
}

// wait holds the call of r at the gate, if one is set and has held no call
// yet; it returns false when the client went away meanwhile.
func (s *Stub) wait(r *http.Request) bool {
	s.mu.Lock()
	g := s.gate
	if g == nil || g.taken {
		s.mu.Unlock()
		return true
	}
	g.taken = true
	s.mu.Unlock()
	close(g.held)
	select {
	case <-g.release:
		return true
	case <-r.Context().Done():
		return false
	}
}

// RefuseCredentials makes the token endpoint refuse the client's
// credentials (401 invalid_client), as FINEOS does while a secret is being
// rotated, and invalidates the tokens issued so far; false accepts them
// again.
func (s *Stub) RefuseCredentials(refuse bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuse = refuse
	if refuse {
		clear(s.tokens)
	}
}

// ExpireTokens invalidates every token issued so far.
func (s *Stub) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// Users returns the provisioned users.
func (s *Stub) Users() []User {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]User, 0, len(s.users))
	for _, u := range s.users {
		out = append(out, *u)
	}
	return out
}

// Calls returns every provisioning call seen, in order.
func (s *Stub) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// Stats returns the counters.
func (s *Stub) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// ServeHTTP routes the token, provisioning and admin endpoints.
func (s *Stub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, AdminPath) {
		s.serveAdmin(w, r)
		return
	}
	// Read the body first: only then does the server notice a client that
	// goes away during the latency below, and cancel the request.
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	s.mu.Lock()
	latency := s.latency
	s.mu.Unlock()
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return
		}
	}
	switch r.URL.Path {
	case TokenPath:
		s.serveToken(w, r)
	case IntegrationPath + fineos.ProvisioningPath:
		s.serveProvision(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (s *Stub) serveToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
		return
	}
	id, secret, ok := r.BasicAuth()
	if ok {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	s.mu.Lock()
	s.stats.TokenRequests++
	refuse := s.refuse
	s.mu.Unlock()
	if refuse || id != s.opts.ClientID || secret != s.opts.ClientSecret {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client"})
		return
	}
	token := "stub-" + randomHex(16)
	s.mu.Lock()
	s.tokens[token] = time.Now().Add(s.opts.TokenTTL)
	s.stats.TokensIssued++
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": token, "token_type": "Bearer", "expires_in": int(s.opts.TokenTTL.Seconds()),
	})
}

func (s *Stub) serveProvision(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	call := Call{}
	status, err := s.checkRequest(r, &call)
	if err != nil {
		s.record(call, status, err)
		writeXMLError(w, status, err)
		return
	}
	if !s.wait(r) {
		return
	}
	s.mu.Lock()
	fault, faulty := s.nextFault(call.Email)
	if faulty && !fault.AfterApply {
		s.stats.FaultsApplied++
		s.mu.Unlock()
		s.record(call, fault.Status, errors.New("injected fault"))
		if fault.Echo {
			writeEchoError(w, fault.Status, call.body)
			return
		}
		writeXMLError(w, fault.Status, errors.New("injected fault"))
		return
	}
	user, existed := s.apply(call)
	res := *user
	if faulty {
		s.stats.FaultsApplied++
	}
	s.mu.Unlock()
	if faulty {
		s.record(call, fault.Status, errors.New("injected fault after apply"))
		writeXMLError(w, fault.Status, errors.New("injected fault"))
		return
	}
	s.record(call, http.StatusOK, nil)
	w.Header().Set("Content-Type", "application/xml; charset=utf-8")
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<p:CreateOrUpdateEmployerViewpointUserResponse xmlns:p="%s"><result><partyReference>%s</partyReference><userId>%s</userId><userOID>%s</userOID><userAlreadyExisted>%t</userAlreadyExisted></result></p:CreateOrUpdateEmployerViewpointUserResponse>`,
		fineos.Namespace, xmlEscape(res.PartyReference), xmlEscape(res.UserID), xmlEscape(res.OID), existed)
}

// nextFault returns the fault for a call about email, if any: the first
// queued one for any email or for this one. s.mu must be held.
func (s *Stub) nextFault(email string) (Fault, bool) {
	for i, f := range s.faults {
		if f.Email == "" || strings.EqualFold(f.Email, email) {
			s.faults = slices.Delete(s.faults, i, i+1)
			return f, true
		}
	}
	if s.faultRate > 0 && mrand.Float64() < s.faultRate {
		return s.rateFault, true
	}
	return Fault{}, false
}

// apply creates or updates the user keyed by its user id. s.mu must be held.
func (s *Stub) apply(c Call) (*User, bool) {
	s.stats.Calls++
	if u, ok := s.users[c.UserID]; ok {
		u.Email, u.PartyReference = c.Email, c.PartyReference
		u.Updates++
		s.stats.Updated++
		return u, true
	}
	s.oid++
	u := &User{UserID: c.UserID, PartyReference: c.PartyReference, Email: c.Email, OID: fmt.Sprintf("PE:%05d:%010d", 11, s.oid)}
	s.users[c.UserID] = u
	s.stats.Created++
	return u, false
}

func (s *Stub) record(c Call, status int, err error) {
	c.Status = status
	if err != nil {
		c.Error = err.Error()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, c)
}

// checkRequest validates headers and body as FINEOS would, filling call.
func (s *Stub) checkRequest(r *http.Request, call *Call) (int, error) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	exp, known := s.tokens[token]
	s.mu.Unlock()
	if !ok || !known || time.Now().After(exp) {
		return http.StatusUnauthorized, errors.New("missing, unknown or expired bearer token")
	}
	if got := r.Header.Get("userid"); got != s.opts.UserID {
		return http.StatusForbidden, fmt.Errorf("userid header %q is not the configured user", got)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(strings.ToLower(ct), "application/xml") {
		return http.StatusUnsupportedMediaType, fmt.Errorf("content type %q is not application/xml", ct)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		return http.StatusBadRequest, fmt.Errorf("read body: %w", err)
	}
	call.body = body
	fields, err := parseRequest(body)
	if err != nil {
		return http.StatusBadRequest, err
	}
	call.PartyReference, call.UserID, call.Email = fields["partyReference"], fields["userID"], fields["emailAddress"]
	for _, name := range []string{"partyReference", "userID", "fullName", "emailAddress", "userRole", "enabled"} {
		if fields[name] == "" {
			return http.StatusUnprocessableEntity, fmt.Errorf("element %s is required", name)
		}
	}
	if fields["userRole"] != fineos.UserRole {
		return http.StatusUnprocessableEntity, fmt.Errorf("userRole %q is not %s", fields["userRole"], fineos.UserRole)
	}
	if fields["enabled"] != "true" && fields["enabled"] != "false" {
		return http.StatusUnprocessableEntity, fmt.Errorf("enabled %q is not a boolean", fields["enabled"])
	}
	if !strings.Contains(fields["emailAddress"], "@") {
		return http.StatusUnprocessableEntity, errors.New("emailAddress is not an address")
	}
	return 0, nil
}

var (
	requestOrder = []string{"partyReference", "userID", "fullName", "emailAddress", "phone", "userRole", "enabled"}
	phoneOrder   = []string{"contactAreaCode", "contactExtensionCode", "contactInternationalCode", "contactNumber"}
)

// parseRequest walks the XML and checks the root element, its namespace and
// the order of its children. It returns the text of the leaf elements.
func parseRequest(body []byte) (map[string]string, error) {
	dec := xml.NewDecoder(strings.NewReader(string(body)))
	root, err := nextStart(dec)
	if err != nil {
		return nil, fmt.Errorf("malformed XML: %w", err)
	}
	if root.Name.Local != "CreateOrUpdateEmployerViewpointUserRequest" || root.Name.Space != fineos.Namespace {
		return nil, fmt.Errorf("root element {%s}%s is not {%s}CreateOrUpdateEmployerViewpointUserRequest",
			root.Name.Space, root.Name.Local, fineos.Namespace)
	}
	fields := map[string]string{}
	if err := readChildren(dec, requestOrder, fields, true); err != nil {
		return nil, err
	}
	return fields, nil
}

func readChildren(dec *xml.Decoder, order []string, fields map[string]string, top bool) error {
	i := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("malformed XML: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if t.Name.Space != "" && t.Name.Space != fineos.Namespace {
				return fmt.Errorf("element %s is in namespace %q", t.Name.Local, t.Name.Space)
			}
			if i >= len(order) || t.Name.Local != order[i] {
				return fmt.Errorf("unexpected element %s: children must be %s in this order", t.Name.Local, strings.Join(order, ", "))
			}
			i++
			if top && t.Name.Local == "phone" {
				if err := readChildren(dec, phoneOrder, fields, false); err != nil {
					return err
				}
				continue
			}
			var text string
			if err := dec.DecodeElement(&text, &t); err != nil {
				return fmt.Errorf("element %s: %w", t.Name.Local, err)
			}
			fields[t.Name.Local] = strings.TrimSpace(text)
		case xml.EndElement:
			if i != len(order) {
				return fmt.Errorf("element %s is missing", order[i])
			}
			return nil
		}
	}
}

func nextStart(dec *xml.Decoder) (xml.StartElement, error) {
	for {
		tok, err := dec.Token()
		if err != nil {
			return xml.StartElement{}, err
		}
		if se, ok := tok.(xml.StartElement); ok {
			return se, nil
		}
	}
}

// serveAdmin exposes the stub's state and fault controls over HTTP for
// processes that do not share memory with it (the demo, benchmarks).
func (s *Stub) serveAdmin(w http.ResponseWriter, r *http.Request) {
	switch strings.TrimPrefix(r.URL.Path, AdminPath) {
	case "users":
		writeJSON(w, http.StatusOK, s.Users())
	case "calls":
		writeJSON(w, http.StatusOK, s.Calls())
	case "stats":
		writeJSON(w, http.StatusOK, s.Stats())
	case "faults":
		if r.Method != http.MethodPost {
			http.Error(w, "POST a JSON object", http.StatusMethodNotAllowed)
			return
		}
		var req struct {
			Queue     []Fault `json:"queue"`
			Rate      float64 `json:"rate"`
			Fault     Fault   `json:"fault"`
			LatencyMS int     `json:"latency_ms"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.InjectFaults(req.Queue...)
		s.SetFaultRate(req.Rate, req.Fault)
		s.SetLatency(time.Duration(req.LatencyMS) * time.Millisecond)
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeXMLError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/xml; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><error><status>%d</status><message>%s</message></error>`, status, xmlEscape(err.Error()))
}

// writeEchoError answers with a FINEOS error response whose message
// repeats the request.
func writeEchoError(w http.ResponseWriter, status int, request []byte) {
	w.Header().Set("Content-Type", "application/xml; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<p:CreateOrUpdateEmployerViewpointUserResponse xmlns:p="%s"><errorCode>VALIDATION_ERROR</errorCode><errorMessage>could not process the request %s</errorMessage></p:CreateOrUpdateEmployerViewpointUserResponse>`,
		fineos.Namespace, xmlEscape(string(request)))
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
