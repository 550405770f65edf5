// Package faultproxy is a reverse proxy that injects latency and faults
// between the import and what it calls: the AWS emulator (SQS, Cognito,
// S3) or the FINEOS stub. Chaos tests and benchmarks put it in front of
// both. Faults are chosen per request at random, per service, with shares
// that can change while it runs; every injected fault is counted. A gate
// holds the requests of one operation until a test releases them.
package faultproxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Services, as told from a request.
const (
	SQS     = "sqs"
	Cognito = "cognito"
	S3      = "s3"
	Fineos  = "fineos"
	SNS     = "sns"
)

// Faults are the shares (0 to 1) of a service's requests that meet each
// fault, and the latency added to all of them.
type Faults struct {
	Latency time.Duration // added before forwarding
	Jitter  time.Duration // up to this much more, at random
	// Throttle answers with the service's throttling error, not forwarded
	// (Cognito TooManyRequestsException, SQS ThrottlingException, FINEOS 429).
	Throttle float64
	Error    float64 // answers 500 (FINEOS: 503), not forwarded
	// ErrorAfter forwards the request, lets it take effect, then answers 500
	// (FINEOS: 504): the caller retries work that was done.
	ErrorAfter float64
	Drop       float64 // closes the connection without an answer, not forwarded
	DropAfter  float64 // forwards, then closes the connection without an answer
	// Refuse, when set, answers every request with this error code, not
	// forwarded: for AWS services HTTP 400 with the code (such as
	// AccessDeniedException: the credentials are refused); for FINEOS 401.
	Refuse string
}

// Quota is an account's quota on one operation ("AdminCreateUser"; for
// FINEOS, Fineos), shared by every client of the proxy: a token bucket of
// Rate requests per second holding at most Burst (at least one). A request over it gets the service's
// throttling error and is not forwarded. Counts: "SERVICE.quota.OP.accepted"
// and "SERVICE.quota.OP.throttled".
//
// The burst defaults to one second's worth: a quota of N requests per
// second admits N requests in any one second, however they bunch.
type Quota struct {
	Rate  float64
	Burst float64
}

type bucket struct {
	q      Quota
	tokens float64
	at     time.Time
}

// take takes a token if there is one.
func (b *bucket) take(now time.Time) bool {
	b.tokens = min(b.q.Burst, b.tokens+now.Sub(b.at).Seconds()*b.q.Rate)
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}

// SetQuota sets (Rate > 0) or removes the quota on an operation.
func (p *Proxy) SetQuota(operation string, q Quota) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if q.Rate <= 0 {
		delete(p.quotas, operation)
		return
	}
	if q.Burst <= 0 {
		q.Burst = max(1, q.Rate)
	}
	p.quotas[operation] = &bucket{q: q, tokens: q.Burst, at: time.Now()}
}

// overQuota says whether a request for operation of service is over its
// quota, counting it.
func (p *Proxy) overQuota(service, operation string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.quotas[operation]
	if b == nil {
		return false
	}
	if b.take(time.Now()) {
		p.counts[service+".quota."+operation+".accepted"]++
		return false
	}
	p.counts[service+".quota."+operation+".throttled"]++
	return true
}

// Proxy forwards to one target.
type Proxy struct {
	target  *url.URL
	service func(*http.Request) string
	client  *http.Client

	mu     sync.Mutex
	faults map[string]Faults
	quotas map[string]*bucket // by operation
	gates  map[string]*Gate   // by operation
	counts map[string]int64   // "service.fault" and "service.requests"
}

// NewAWS returns a proxy to an AWS endpoint (the emulator); it tells SQS,
// Cognito and S3 requests apart.
func NewAWS(target string) (*Proxy, error) { return newProxy(target, awsService) }

// NewFineos returns a proxy to the FINEOS stub.
func NewFineos(target string) (*Proxy, error) {
	return newProxy(target, func(*http.Request) string { return Fineos })
}

func newProxy(target string, service func(*http.Request) string) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("faultproxy: bad target %q", target)
	}
	return &Proxy{
		target:  u,
		service: service,
		client: &http.Client{Transport: &http.Transport{
			MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: 90 * time.Second,
		}},
		faults: map[string]Faults{},
		quotas: map[string]*bucket{},
		gates:  map[string]*Gate{},
		counts: map[string]int64{},
	}, nil
}

func awsService(r *http.Request) string {
	target := r.Header.Get("X-Amz-Target")
	switch {
	case strings.Contains(r.Header.Get("Authorization"), "/sns/aws4_request"):
		return SNS // the query protocol: no target header
	case strings.HasPrefix(target, "AmazonSQS."):
		return SQS
	case strings.HasPrefix(target, "AWSCognitoIdentityProviderService."):
		return Cognito
	default:
		return S3
	}
}

// PutObject is the operation of an S3 request that writes an object, as
// Hold names it.
const PutObject = "PutObject"

// operation names a request's operation for Hold: the JSON-protocol
// services' target ("ReceiveMessage", "AdminCreateUser"), PutObject for an
// S3 PUT of an object (not a part of a multipart upload, not a copy), or
// the service's name.
func operation(service, target string, r *http.Request) string {
	if _, op, ok := strings.Cut(target, "."); ok {
		return op
	}
	if service == S3 && r.Method == http.MethodPut && r.Header.Get("X-Amz-Copy-Source") == "" && !r.URL.Query().Has("uploadId") {
		if _, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/"); key != "" {
			return PutObject
		}
	}
	return service
}

// Gate holds the requests of one operation, before they are forwarded,
// until it is released. A held request whose client goes away meanwhile
// is not forwarded.
type Gate struct {
	p       *Proxy
	op      string
	held    chan struct{} // closed when the first request waits
	release chan struct{} // closed by Release
	once    sync.Once     // closes held
	free    sync.Once     // closes release

	mu        sync.Mutex
	abandoned int
}

// Hold holds every request for operation (see PutObject) from now until
// the returned gate is released. Counts: "SERVICE.held" and
// "SERVICE.held.abandoned" (a held request whose client went away).
func (p *Proxy) Hold(operation string) *Gate {
	g := &Gate{p: p, op: operation, held: make(chan struct{}), release: make(chan struct{})}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gates[operation] = g
	return g
}

// Held is closed once a request waits at the gate.
func (g *Gate) Held() <-chan struct{} { return g.held }

// Abandoned returns how many held requests' clients went away: those were
// not forwarded.
func (g *Gate) Abandoned() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.abandoned
}

// Release forwards the held requests whose clients still wait, and lets
// the operation's requests through from now on.
func (g *Gate) Release() {
	g.free.Do(func() { close(g.release) })
	g.p.mu.Lock()
	defer g.p.mu.Unlock()
	if g.p.gates[g.op] == g {
		delete(g.p.gates, g.op)
	}
}

// wait holds a request until the gate is released; false when its client
// went away first (or meanwhile): it must not be forwarded.
func (g *Gate) wait(ctx context.Context) bool {
	g.once.Do(func() { close(g.held) })
	select {
	case <-g.release:
	case <-ctx.Done():
	}
	if ctx.Err() != nil {
		g.mu.Lock()
		g.abandoned++
		g.mu.Unlock()
		return false
	}
	return true
}

// hold holds a request of service for op at its gate, if there is one,
// counting it; false when the request must not be forwarded.
func (p *Proxy) hold(ctx context.Context, service, op string) bool {
	p.mu.Lock()
	g := p.gates[op]
	if g != nil {
		p.counts[service+".held"]++
	}
	p.mu.Unlock()
	if g == nil || g.wait(ctx) {
		return true
	}
	p.mu.Lock()
	p.counts[service+".held.abandoned"]++
	p.mu.Unlock()
	return false
}

// Set replaces the faults of a service.
func (p *Proxy) Set(service string, f Faults) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults[service] = f
}

// Counts returns how many requests each service got ("sqs.requests"), by
// operation for the JSON-protocol services ("sqs.op.ReceiveMessage"), and
// how many faults of each kind were injected ("sqs.throttle", …).
func (p *Proxy) Counts() map[string]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.counts)
}

// fault picks the fault for one request of service, counting it.
func (p *Proxy) fault(service string) (Faults, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.faults[service]
	p.counts[service+".requests"]++
	x := rand.Float64()
	for _, c := range []struct {
		name  string
		share float64
	}{{"throttle", f.Throttle}, {"error", f.Error}, {"error_after", f.ErrorAfter}, {"drop", f.Drop}, {"drop_after", f.DropAfter}} {
		if x < c.share {
			p.counts[service+"."+c.name]++
			return f, c.name
		}
		x -= c.share
	}
	return f, ""
}

// ServeHTTP forwards the request, with the service's latency and perhaps a fault.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Read the body first: only then does the server notice a client that
	// goes away during the latency, and cancel the request.
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		http.Error(w, "faultproxy: read request: "+err.Error(), http.StatusBadRequest)
		return
	}
	service := p.service(r)
	op := service // FINEOS: one operation
	target := r.Header.Get("X-Amz-Target")
	if _, o, ok := strings.Cut(target, "."); ok {
		op = o
		p.mu.Lock()
		p.counts[service+".op."+op]++
		p.mu.Unlock()
	}
	if service == SNS { // the query protocol: the operation is in the form
		if form, err := url.ParseQuery(string(body)); err == nil && form.Get("Action") != "" {
			op, target = form.Get("Action"), "AmazonSNS."+form.Get("Action")
			p.mu.Lock()
			p.counts[service+".op."+op]++
			p.mu.Unlock()
		}
	}
	f, fault := p.fault(service)
	if f.Refuse != "" {
		p.mu.Lock()
		p.counts[service+".refused"]++
		p.mu.Unlock()
		if service == Fineos {
			http.Error(w, "refused (injected): "+f.Refuse, http.StatusUnauthorized)
		} else {
			awsError(w, http.StatusBadRequest, f.Refuse, "refused (injected)")
		}
		return
	}
	if d := f.Latency + randDuration(f.Jitter); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	if p.overQuota(service, op) {
		throttle(w, service)
		return
	}
	switch fault {
	case "throttle":
		throttle(w, service)
		return
	case "error":
		serverError(w, service, false)
		return
	case "drop":
		drop(w)
		return
	}
	if !p.hold(r.Context(), service, operation(service, target, r)) {
		return
	}
	resp, answer, err := p.forward(r, body)
	if err != nil {
		if r.Context().Err() == nil {
			http.Error(w, "faultproxy: "+err.Error(), http.StatusBadGateway)
		}
		return
	}
	switch fault {
	case "error_after":
		serverError(w, service, true)
		return
	case "drop_after":
		drop(w)
		return
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
}

// forward sends r, with its body already read, to the target and reads
// the whole answer.
func (p *Proxy) forward(r *http.Request, reqBody []byte) (*http.Response, []byte, error) {
	u := *p.target
	u.Path = strings.TrimSuffix(p.target.Path, "/") + r.URL.Path
	u.RawQuery = r.URL.RawQuery
	out, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), bytes.NewReader(reqBody))
	if err != nil {
		return nil, nil, err
	}
	out.Header = r.Header.Clone()
	out.Host = p.target.Host
	resp, err := p.client.Do(out)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("read answer: %w", err)
	}
	resp.Header.Del("Content-Length")
	return resp, body, nil
}

func throttle(w http.ResponseWriter, service string) {
	switch service {
	case Fineos:
		http.Error(w, "too many requests (injected)", http.StatusTooManyRequests)
	case Cognito:
		awsError(w, http.StatusBadRequest, "TooManyRequestsException", "Too many requests (injected)")
	case S3:
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `<Error><Code>SlowDown</Code><Message>Please reduce your request rate (injected)</Message></Error>`)
	default:
		awsError(w, http.StatusBadRequest, "ThrottlingException", "Rate exceeded (injected)")
	}
}

func serverError(w http.ResponseWriter, service string, after bool) {
	switch service {
	case Fineos:
		status := http.StatusServiceUnavailable
		if after {
			status = http.StatusGatewayTimeout
		}
		http.Error(w, "unavailable (injected)", status)
	case S3:
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `<Error><Code>InternalError</Code><Message>injected</Message></Error>`)
	default:
		awsError(w, http.StatusInternalServerError, "InternalFailure", "injected")
	}
}

func awsError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-ErrorType", code)
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"__type":%q,"message":%q}`, code, msg)
}

// drop closes the client's connection without an answer.
func drop(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

func randDuration(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	return rand.N(max)
}
