// Package emulator serves the embedded AWS emulator (kumo) for SQS, S3 and
// Cognito on a chosen address. kumo itself listens on a random loopback
// port; a reverse proxy puts it on a fixed one, and is also where tests and
// benchmarks add latency or faults (see Options.Wrap).
package emulator

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/sivchari/kumo"
)

// Options configure a server.
type Options struct {
	// Addr to listen on, such as "127.0.0.1:4566"; port 0 picks a free one.
	Addr string
	// Wrap, if set, wraps the proxy handler (to inject latency or faults).
	Wrap func(http.Handler) http.Handler
}

// Server is a running emulator.
type Server struct {
	URL  string // http://host:port of the proxy
	kumo *kumo.Server
	http *http.Server
	done chan struct{}
}

// Start runs an emulator. kumo keeps its state in process-global memory:
// two servers in one process share queues, buckets and pools.
func Start(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("emulator: listen on %s: %w", opts.Addr, err)
	}
	k := kumo.NewServer()
	target, err := url.Parse(k.URL)
	if err != nil {
		k.Close()
		ln.Close()
		return nil, fmt.Errorf("emulator: %w", err)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(target) },
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     90 * time.Second,
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away (a cancelled long poll): nothing to say
			}
			http.Error(w, "emulator proxy: "+err.Error(), http.StatusBadGateway)
		},
	}
	var h http.Handler = bufferBody(proxy)
	if opts.Wrap != nil {
		h = opts.Wrap(h)
	}
	s := &Server{
		URL:  "http://" + ln.Addr().String(),
		kumo: k,
		http: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second},
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		_ = s.http.Serve(ln) // returns when Close shuts the server down
	}()
	return s, nil
}

// bufferBody reads each request body into memory before proxying it. The
// proxy's transport may still be reading the body when the answer arrives
// and ReverseProxy closes it; with the server's body that read fails and
// the transport drops the upstream connection mid-answer. A private copy
// cannot fail. Bodies are bounded at 64 MiB.
func bufferBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			buf, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
			if err != nil {
				http.Error(w, "emulator proxy: read request: "+err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(buf))
			r.ContentLength = int64(len(buf))
		}
		next.ServeHTTP(w, r)
	})
}

// Close stops the proxy and the emulator.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.http.Shutdown(ctx)
	_ = s.http.Close()
	<-s.done
	s.kumo.Close()
}
