// Package fineos is a client for the one FINEOS call the import needs:
// creating (or updating) an "employer viewpoint user", the FINEOS account
// of a leave administrator. It authenticates with OAuth2 client credentials
// and caches the token until shortly before it expires.
package fineos

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/massgov/bulk-user-import/shared/budget"
	"github.com/massgov/bulk-user-import/shared/mask"
	"github.com/massgov/bulk-user-import/shared/textbound"
)

// Namespace of the provisioning service's XML.
const Namespace = "http://www.fineos.com/frontoffice/externaluserprovisioning/external"

// ProvisioningPath is appended to the integration services URL.
const ProvisioningPath = "rest/externalUserProvisioningService/createOrUpdateEmployerViewpointUser"

// Values PFML sends for every leave administrator.
const (
	FullName = "Leave Administrator"
	UserRole = "AllPermissions"
)

const maxResponseBytes = 1 << 20

// Config locates FINEOS and holds the OAuth2 client credentials.
type Config struct {
	IntegrationServicesURL string // FINEOS_CLIENT_INTEGRATION_SERVICES_API_URL
	OAuth2URL              string // FINEOS_CLIENT_OAUTH2_URL
	ClientID               string // FINEOS_CLIENT_OAUTH2_CLIENT_ID
	ClientSecret           string // FINEOS_CLIENT_OAUTH2_CLIENT_SECRET
	UserID                 string // FINEOS_CLIENT_WSCOMPOSER_USER_ID
}

// Env returns the configuration as the environment variables that hold it.
func (c Config) Env() map[string]string {
	return map[string]string{
		"FINEOS_CLIENT_INTEGRATION_SERVICES_API_URL": c.IntegrationServicesURL,
		"FINEOS_CLIENT_OAUTH2_URL":                   c.OAuth2URL,
		"FINEOS_CLIENT_OAUTH2_CLIENT_ID":             c.ClientID,
		"FINEOS_CLIENT_OAUTH2_CLIENT_SECRET":         c.ClientSecret,
		"FINEOS_CLIENT_WSCOMPOSER_USER_ID":           c.UserID,
	}
}

// Enabled reports whether any FINEOS setting is present.
func (c Config) Enabled() bool { return c != Config{} }

// Validate names every missing or malformed setting.
func (c Config) Validate() error {
	var errs []error
	for _, f := range []struct{ env, val string }{
		{"FINEOS_CLIENT_INTEGRATION_SERVICES_API_URL", c.IntegrationServicesURL},
		{"FINEOS_CLIENT_OAUTH2_URL", c.OAuth2URL},
	} {
		if f.val == "" {
			errs = append(errs, fmt.Errorf("%s is not set", f.env))
		} else if u, err := url.Parse(f.val); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s is not an http(s) URL", f.env))
		}
	}
	for _, f := range []struct{ env, val string }{
		{"FINEOS_CLIENT_OAUTH2_CLIENT_ID", c.ClientID},
		{"FINEOS_CLIENT_OAUTH2_CLIENT_SECRET", c.ClientSecret},
		{"FINEOS_CLIENT_WSCOMPOSER_USER_ID", c.UserID},
	} {
		if f.val == "" {
			errs = append(errs, fmt.Errorf("%s is not set", f.env))
		}
	}
	return errors.Join(errs...)
}

// HTTPError is a non-success HTTP answer from FINEOS or its token endpoint.
// It keeps the status, FINEOS's error code if the body has one, and the
// start of the body with every email and FEIN masked: FINEOS may echo the
// request, and the error is logged, stored and shown.
type HTTPError struct {
	Op     string // "token" or "provision"
	Status int
	Code   string // FINEOS's error code, when the body holds one
	Body   string // the start of the body, masked, for the operator
}

func (e *HTTPError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("fineos %s: HTTP %d, error code %s: %s", e.Op, e.Status, e.Code, e.Body)
	}
	return fmt.Sprintf("fineos %s: HTTP %d: %s", e.Op, e.Status, e.Body)
}

// ResponseError is a FINEOS answer that reports an error in its body; the
// message is masked as HTTPError's body is.
type ResponseError struct {
	Code    string
	Message string
}

func (e *ResponseError) Error() string {
	return fmt.Sprintf("fineos refused the user: %s: %s", e.Code, e.Message)
}

// errorCodePattern finds FINEOS's error code in an XML or JSON body.
var errorCodePattern = regexp.MustCompile(`(?i)<(?:[a-z0-9]+:)?(?:errorCode|code)>\s*([A-Za-z0-9_.-]{1,64})\s*<|"(?:errorCode|code)"\s*:\s*"([A-Za-z0-9_.-]{1,64})"`)

// httpError builds the HTTPError of an answer; echoed are the request's
// values, left out of the body if FINEOS repeats them.
func httpError(op string, status int, body []byte, echoed ...string) *HTTPError {
	e := &HTTPError{Op: op, Status: status, Body: snippet(body, echoed...)}
	if m := errorCodePattern.FindSubmatch(body); m != nil {
		e.Code = string(m[1]) + string(m[2])
	}
	return e
}

// ViewpointUser is a leave administrator to create or update.
type ViewpointUser struct {
	PartyReference string // the employer's fineos_employer_id
	UserID         string // the FINEOS web id; the call is idempotent on it
	Email          string
}

// Result is FINEOS's answer to a successful call.
type Result struct {
	PartyReference string
	UserID         string
	UserOID        string
	AlreadyExisted bool
}

// Client calls FINEOS. It is safe for concurrent use.
type Client struct {
	cfg   Config
	http  *http.Client
	now   func() time.Time
	limit *budget.Limit // nil: no pacing

	mu      sync.Mutex
	token   string
	expires time.Time
	// A refused or failed token request is the answer for a second to
	// the callers that waited for it: one request, not one per row.
	tokenErr   error
	tokenErrAt time.Time
}

// New returns a client. httpClient may be nil for a default with a 35 s
// time-out (FINEOS answers within 29 s or with a 504).
func New(cfg Config, httpClient *http.Client) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("fineos configuration: %w", err)
	}
	if httpClient == nil {
		httpClient = &http.Client{Timeout: 35 * time.Second}
	}
	if !strings.HasSuffix(cfg.IntegrationServicesURL, "/") {
		cfg.IntegrationServicesURL += "/"
	}
	return &Client{cfg: cfg, http: httpClient, now: time.Now}, nil
}

// SetLimit makes every provisioning call wait for a token of l (a fleet
// budget's share or a per-worker cap; nil: no pacing), and reports FINEOS's
// throttling (HTTP 429) to it. Call it before use.
func (c *Client) SetLimit(l *budget.Limit) { c.limit = l }

// CreateOrUpdateEmployerViewpointUser provisions u. Calling it again with
// the same UserID updates that user instead of creating another.
func (c *Client) CreateOrUpdateEmployerViewpointUser(ctx context.Context, u ViewpointUser) (Result, error) {
	body, err := xml.Marshal(newRequest(u))
	if err != nil {
		return Result{}, fmt.Errorf("fineos: encode request: %w", err)
	}
	body = append([]byte(xml.Header), body...)
	for attempt := 0; ; attempt++ {
		token, err := c.accessToken(ctx)
		if err != nil {
			return Result{}, err
		}
		if err := c.limit.Wait(ctx); err != nil {
			return Result{}, fmt.Errorf("fineos provision: %w", err)
		}
		res, err := c.provision(ctx, token, body, u.Email, u.UserID, u.PartyReference)
		var he *HTTPError
		if errors.As(err, &he) && he.Status == http.StatusTooManyRequests {
			c.limit.Throttled()
		}
		if attempt == 0 && errors.As(err, &he) && he.Status == http.StatusUnauthorized {
			c.dropToken(token) // expired or revoked early: fetch a new one, once
			continue
		}
		return res, err
	}
}

// provision sends the request body; echoed are its values, which FINEOS's
// error answers may repeat and the errors must not.
func (c *Client) provision(ctx context.Context, token string, body []byte, echoed ...string) (Result, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.IntegrationServicesURL+ProvisioningPath, bytes.NewReader(body))
	if err != nil {
		return Result{}, fmt.Errorf("fineos provision: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("userid", c.cfg.UserID)
	req.Header.Set("Content-Type", "application/xml; charset=utf-8")
	req.Header.Set("Accept", "application/xml")
	resp, err := c.http.Do(req)
	if err != nil {
		return Result{}, fmt.Errorf("fineos provision: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return Result{}, fmt.Errorf("fineos provision: read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return Result{}, httpError("provision", resp.StatusCode, data, echoed...)
	}
	var out response
	if err := xml.Unmarshal(data, &out); err != nil || out.XMLName.Local != "CreateOrUpdateEmployerViewpointUserResponse" {
		return Result{}, fmt.Errorf("fineos provision: unexpected response %q", snippet(data, echoed...))
	}
	if out.ErrorCode != "" || out.Result == nil {
		return Result{}, &ResponseError{Code: out.ErrorCode, Message: snippet([]byte(out.ErrorMessage), echoed...)}
	}
	return Result{
		PartyReference: out.Result.PartyReference,
		UserID:         out.Result.UserID,
		UserOID:        out.Result.UserOID,
		AlreadyExisted: out.Result.UserAlreadyExisted,
	}, nil
}

// accessToken returns the cached token or fetches a new one. Concurrent
// callers wait for a single fetch.
func (c *Client) accessToken(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && c.now().Before(c.expires) {
		return c.token, nil
	}
	if c.tokenErr != nil && c.now().Sub(c.tokenErrAt) < time.Second {
		return "", c.tokenErr
	}
	token, err := c.fetchToken(ctx)
	c.tokenErr, c.tokenErrAt = err, c.now()
	return token, err
}

// fetchToken requests a new token; the caller holds c.mu.
func (c *Client) fetchToken(ctx context.Context) (string, error) {
	form := url.Values{"grant_type": {"client_credentials"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.OAuth2URL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", fmt.Errorf("fineos token: %w", err)
	}
	req.SetBasicAuth(url.QueryEscape(c.cfg.ClientID), url.QueryEscape(c.cfg.ClientSecret))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("fineos token: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return "", fmt.Errorf("fineos token: read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", httpError("token", resp.StatusCode, data)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(data, &tok); err != nil || tok.AccessToken == "" {
		return "", errors.New("fineos token: response holds no access_token")
	}
	if tok.TokenType != "" && !strings.EqualFold(tok.TokenType, "bearer") {
		return "", fmt.Errorf("fineos token: token type %q is not bearer", tok.TokenType)
	}
	lifetime := time.Duration(tok.ExpiresIn) * time.Second
	if lifetime <= 0 {
		lifetime = 5 * time.Minute
	}
	// Renew a little early, so a token does not expire in flight.
	margin := min(lifetime/10, time.Minute)
	c.token, c.expires = tok.AccessToken, c.now().Add(lifetime-margin)
	return c.token, nil
}

// Probe fetches a new token: nil when FINEOS accepts the credentials.
// The token is kept for the calls that follow.
func (c *Client) Probe(ctx context.Context) error {
	c.mu.Lock()
	c.token, c.tokenErr = "", nil
	c.mu.Unlock()
	_, err := c.accessToken(ctx)
	return err
}

func (c *Client) dropToken(token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token == token {
		c.token = ""
	}
}

// errorMessagePattern finds FINEOS's error message in an XML or JSON body.
var errorMessagePattern = regexp.MustCompile(`(?is)<(?:[a-z0-9]+:)?(?:errorMessage|message)>(.*?)</|"(?:errorMessage|message)"\s*:\s*"((?:[^"\\]|\\.)*)"`)

// snippet returns the start of an error answer for an error message: the
// error message it holds if it has one, else the body; every value of the
// request it echoes (any case) left out, every other email and FEIN masked.
func snippet(b []byte, echoed ...string) string {
	const n = 300
	s := strings.ToValidUTF8(string(b), "?")
	if m := errorMessagePattern.FindStringSubmatch(s); m != nil {
		s = html.UnescapeString(m[1] + m[2])
	}
	for _, v := range echoed {
		if len(v) >= 3 {
			s = regexp.MustCompile(`(?i)`+regexp.QuoteMeta(v)).ReplaceAllLiteralString(s, "[request value]")
		}
	}
	return textbound.OneLine(mask.Text(s), n)
}

// request is the XML body of the provisioning call. Element order matters.
type request struct {
	XMLName        xml.Name `xml:"p:CreateOrUpdateEmployerViewpointUserRequest"`
	Namespace      string   `xml:"xmlns:p,attr"`
	PartyReference string   `xml:"partyReference"`
	UserID         string   `xml:"userID"`
	FullName       string   `xml:"fullName"`
	EmailAddress   string   `xml:"emailAddress"`
	Phone          phone    `xml:"phone"`
	UserRole       string   `xml:"userRole"`
	Enabled        bool     `xml:"enabled"`
}

type phone struct {
	ContactAreaCode          string `xml:"contactAreaCode"`
	ContactExtensionCode     string `xml:"contactExtensionCode"`
	ContactInternationalCode string `xml:"contactInternationalCode"`
	ContactNumber            string `xml:"contactNumber"`
}

func newRequest(u ViewpointUser) request {
	return request{
		Namespace:      Namespace,
		PartyReference: u.PartyReference,
		UserID:         u.UserID,
		FullName:       FullName,
		EmailAddress:   u.Email,
		UserRole:       UserRole,
		Enabled:        true,
	}
}

type response struct {
	XMLName      xml.Name
	ErrorCode    string `xml:"errorCode"`
	ErrorMessage string `xml:"errorMessage"`
	Result       *struct {
		PartyReference     string `xml:"partyReference"`
		UserID             string `xml:"userId"`
		UserOID            string `xml:"userOID"`
		UserAlreadyExisted bool   `xml:"userAlreadyExisted"`
	} `xml:"result"`
}
