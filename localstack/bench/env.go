package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/localstack/bootstrap"
	"github.com/massgov/bulk-user-import/localstack/devdb"
	"github.com/massgov/bulk-user-import/localstack/emulator"
	"github.com/massgov/bulk-user-import/localstack/faultproxy"
	"github.com/massgov/bulk-user-import/localstack/fineosstub"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/jobs"
)

// env is everything a benchmark talks to: the emulator behind a latency
// proxy, the FINEOS stub behind another, and a fresh database reached
// through a proxy that counts round trips.
type env struct {
	emu        *emulator.Server
	direct     aws.Config // no latency: for setup and the splitter
	awsProxy   *faultproxy.Proxy
	awsURL     string
	fineos     *fineosstub.Stub
	fineosPx   *faultproxy.Proxy
	fineosURL  string
	dbName     string
	dbURL      string // direct
	dbProxyURL string // through the counter
	pool       *pgxpool.Pool
	trips      *tripCounter
	adminURL   string
	employers  bool // the generated rows' employers are in the database
	closers    []func()
}

func newEnv(ctx context.Context, serverURL string) (_ *env, err error) {
	e := &env{adminURL: serverURL}
	defer func() {
		if err != nil {
			e.close() // what was started so far, the database included
		}
	}()
	if e.emu, err = emulator.Start(emulator.Options{}); err != nil {
		return nil, err
	}
	e.closers = append(e.closers, e.emu.Close)
	if e.direct, err = awsconf.Load(ctx, "us-east-1",
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("bench", "bench", "")),
		config.WithBaseEndpoint(e.emu.URL)); err != nil {
		return nil, err
	}
	if e.awsProxy, err = faultproxy.NewAWS(e.emu.URL); err != nil {
		return nil, err
	}
	awsSrv := httptest.NewServer(e.awsProxy)
	e.closers = append(e.closers, awsSrv.Close)
	e.awsURL = awsSrv.URL

	e.fineos = fineosstub.New(fineosstub.DefaultOptions())
	stubSrv := httptest.NewServer(e.fineos)
	e.closers = append(e.closers, stubSrv.Close)
	if e.fineosPx, err = faultproxy.NewFineos(stubSrv.URL); err != nil {
		return nil, err
	}
	fSrv := httptest.NewServer(e.fineosPx)
	e.closers = append(e.closers, fSrv.Close)
	e.fineosURL = fSrv.URL

	// A fresh database, dropped at the end.
	cfg, err := pgx.ParseConfig(serverURL)
	if err != nil {
		return nil, err
	}
	e.dbName = "bui_bench_" + suffix()
	e.dbURL = devdb.WithDatabase(serverURL, e.dbName)
	if err := devdb.EnsureDatabase(ctx, e.dbURL); err != nil {
		return nil, err
	}
	e.closers = append(e.closers, func() { dropDatabase(serverURL, e.dbName) })
	if e.pool, err = pgxpool.New(ctx, e.dbURL); err != nil {
		return nil, err
	}
	e.closers = append(e.closers, e.pool.Close)
	if err := devdb.ApplySchema(ctx, e.pool); err != nil {
		return nil, err
	}
	if err := jobs.Migrate(ctx, e.pool); err != nil {
		return nil, err
	}
	e.trips, err = newTripCounter(fmt.Sprintf("%s:%d", cfg.Host, cfg.Port))
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, e.trips.close)
	e.dbProxyURL = withHostPort(e.dbURL, e.trips.addr())
	return e, nil
}

func (e *env) close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
}

// resources creates a queue, DLQ, buckets and pool with fresh names.
func (e *env) resources(ctx context.Context, name string) (bootstrap.Resources, error) {
	sfx := suffix()
	return bootstrap.Ensure(ctx, bootstrap.Clients{SQS: awsconf.SQS(e.direct), S3: awsconf.S3(e.direct), Cognito: awsconf.Cognito(e.direct)},
		bootstrap.Spec{Region: "us-east-1", QueueName: name + "-" + sfx, DLQName: name + "-dlq-" + sfx, MaxReceiveCount: 5,
			VisibilityTimeout: time.Minute, ResultsBucket: "bench-results-" + sfx, SourceBucket: "bench-source-" + sfx, UserPoolName: name + "-" + sfx})
}

// processEnv is the environment of the binaries: through the latency
// proxies and the round-trip counter when proxied, else direct.
func (e *env) processEnv(res bootstrap.Resources, proxied bool) []string {
	vars := res.Env()
	vars["AWS_REGION"] = "us-east-1"
	vars["AWS_ACCESS_KEY_ID"], vars["AWS_SECRET_ACCESS_KEY"] = "bench", "bench"
	vars["LOG_FORMAT"], vars["LOG_LEVEL"] = "json", "warn"
	vars["AWS_ENDPOINT_URL"], vars["DATABASE_URL"] = e.emu.URL, e.dbURL
	if proxied {
		vars["AWS_ENDPOINT_URL"], vars["DATABASE_URL"] = e.awsURL, e.dbProxyURL
	}
	maps.Copy(vars, fineosstub.DefaultOptions().Config(e.fineosURL).Env())
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := vars[k]; !ok && !strings.HasPrefix(k, "FINEOS_") && !strings.HasPrefix(k, "DB_") && !strings.HasPrefix(k, "AWS_ENDPOINT_URL") {
			out = append(out, kv)
		}
	}
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	return out
}

// transactions reads the database's committed and rolled back transactions.
func (e *env) transactions(ctx context.Context) (int64, error) {
	var n int64
	err := e.pool.QueryRow(ctx, `SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()`).Scan(&n)
	return n, err
}

// tripCounter is a TCP proxy in front of PostgreSQL that counts round
// trips: each time the client speaks after the server (a request after a
// response) is one.
type tripCounter struct {
	ln     net.Listener
	target string
	trips  atomic.Int64
}

func newTripCounter(target string) (*tripCounter, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &tripCounter{ln: ln, target: target}
	go t.serve()
	return t, nil
}

func (t *tripCounter) addr() string { return t.ln.Addr().String() }

func (t *tripCounter) close() { t.ln.Close() }

func (t *tripCounter) serve() {
	for {
		c, err := t.ln.Accept()
		if err != nil {
			return
		}
		go t.handle(c)
	}
}

func (t *tripCounter) handle(client net.Conn) {
	server, err := net.Dial("tcp", t.target)
	if err != nil {
		client.Close()
		return
	}
	var clientTurn atomic.Bool // the client spoke last
	pipe := func(dst, src net.Conn, fromClient bool) {
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if fromClient && !clientTurn.Swap(true) {
					t.trips.Add(1)
				} else if !fromClient {
					clientTurn.Store(false)
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		dst.Close()
		src.Close()
	}
	go pipe(server, client, true)
	pipe(client, server, false)
}

func suffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func withHostPort(url, hostport string) string {
	schemeEnd := strings.Index(url, "://") + 3
	rest := url[schemeEnd:]
	at := strings.IndexByte(rest, '@')
	slash := strings.IndexByte(rest, '/')
	return url[:schemeEnd] + rest[:at+1] + hostport + rest[slash:]
}

func dropDatabase(serverURL, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
}
