// Package stacktest starts, for a test, everything the import talks to: the
// embedded AWS emulator (one per test binary, since its state is global),
// a FINEOS stub, a throw-away PostgreSQL database with the PFML dev schema,
// and a queue, dead-letter queue, bucket and user pool with unique names.
package stacktest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"maps"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/localstack/bootstrap"
	"github.com/massgov/bulk-user-import/localstack/emulator"
	"github.com/massgov/bulk-user-import/localstack/fineosstub"
	"github.com/massgov/bulk-user-import/localstack/pgtest"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/cognito"
	"github.com/massgov/bulk-user-import/shared/fineos"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/pfml"
	"github.com/massgov/bulk-user-import/shared/register"
)

// Region of the test stack.
const Region = "us-east-1"

var (
	emuOnce sync.Once
	emu     *emulator.Server
	emuErr  error
)

// Emulator returns the test binary's emulator, starting it on first use.
// Wrap, if the first caller gives one, sits in front of it for the whole
// binary (used by fault-injection tests).
func Emulator(tb testing.TB) *emulator.Server {
	tb.Helper()
	emuOnce.Do(func() { emu, emuErr = emulator.Start(emulator.Options{}) })
	if emuErr != nil {
		tb.Fatalf("stacktest: %v", emuErr)
	}
	return emu
}

// AWSConfig returns an SDK configuration pointing at endpoint with dummy
// credentials.
func AWSConfig(tb testing.TB, endpoint string) aws.Config {
	tb.Helper()
	cfg, err := awsconf.Load(context.Background(), Region,
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("test", "test", "")),
		config.WithBaseEndpoint(endpoint),
	)
	if err != nil {
		tb.Fatalf("stacktest: %v", err)
	}
	return cfg
}

// Stack is one test's environment.
type Stack struct {
	AWS          aws.Config
	EndpointURL  string
	Fineos       *fineosstub.Stub
	FineosURL    string
	FineosConfig fineos.Config
	DatabaseURL  string
	Pool         *pgxpool.Pool
	Resources    bootstrap.Resources
	Spec         bootstrap.Spec
}

// Options adjust a stack.
type Options struct {
	MaxReceiveCount   int           // default 3 (tests want DLQ moves quickly)
	VisibilityTimeout time.Duration // default 30 s
	// Postgres, if set, holds the test's database instead of the shared
	// server (a test that reads the server's log starts its own).
	Postgres *pgtest.Server
	// Endpoint, if set, is an AWS endpoint to use instead of the embedded
	// emulator (moto_server in the moto test).
	Endpoint string
	// Bootstrap, if set, creates the stack's AWS resources instead of
	// bootstrap.Ensure (the moto test runs the devstack binary).
	Bootstrap func(ctx context.Context, spec bootstrap.Spec) (bootstrap.Resources, error)
}

// New starts a stack for the test; everything is cleaned up at its end.
func New(tb testing.TB, opts Options) *Stack {
	tb.Helper()
	if opts.MaxReceiveCount == 0 {
		opts.MaxReceiveCount = 3
	}
	if opts.VisibilityTimeout == 0 {
		opts.VisibilityTimeout = 30 * time.Second
	}
	endpoint := opts.Endpoint
	if endpoint == "" {
		endpoint = Emulator(tb).URL
	}
	s := &Stack{EndpointURL: endpoint, AWS: AWSConfig(tb, endpoint)}

	fo := fineosstub.DefaultOptions()
	s.Fineos = fineosstub.New(fo)
	fsrv := httptest.NewServer(s.Fineos)
	tb.Cleanup(fsrv.Close)
	s.FineosURL = fsrv.URL
	s.FineosConfig = fo.Config(fsrv.URL)

	suffix := Suffix()
	if opts.Postgres != nil {
		s.DatabaseURL, s.Pool = opts.Postgres.PFMLDatabase(tb, "bui_"+suffix)
	} else {
		s.DatabaseURL, s.Pool = pgtest.NewPFMLDatabase(tb)
	}

	s.Spec = bootstrap.Spec{
		Region:            Region,
		QueueName:         "import-" + suffix,
		DLQName:           "import-dlq-" + suffix,
		MaxReceiveCount:   opts.MaxReceiveCount,
		VisibilityTimeout: opts.VisibilityTimeout,
		ResultsBucket:     "results-" + suffix,
		SourceBucket:      "source-" + suffix,
		UserPoolName:      "pool-" + suffix,
		CompletionTopic:   "completions-" + suffix,
		CompletionQueue:   "completions-rx-" + suffix,
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ensure := opts.Bootstrap
	if ensure == nil {
		ensure = func(ctx context.Context, spec bootstrap.Spec) (bootstrap.Resources, error) {
			return bootstrap.Ensure(ctx, bootstrap.Clients{
				SQS: awsconf.SQS(s.AWS), S3: awsconf.S3(s.AWS), Cognito: awsconf.Cognito(s.AWS), SNS: awsconf.SNS(s.AWS),
			}, spec)
		}
	}
	res, err := ensure(ctx, s.Spec)
	if err != nil {
		tb.Fatalf("stacktest: bootstrap: %v", err)
	}
	s.Resources = res
	return s
}

// Env returns the environment variables the binaries need for this stack.
func (s *Stack) Env() map[string]string {
	env := s.Resources.Env()
	env["DATABASE_URL"] = s.DatabaseURL
	env["AWS_ENDPOINT_URL"] = s.EndpointURL
	env["AWS_REGION"] = Region
	env["AWS_ACCESS_KEY_ID"] = "test"
	env["AWS_SECRET_ACCESS_KEY"] = "test"
	maps.Copy(env, s.FineosConfig.Env())
	return env
}

// AddEmployer inserts an employer; fineosID 0 means none.
func (s *Stack) AddEmployer(tb testing.TB, fein string, fineosID int) string {
	tb.Helper()
	var fid any
	if fineosID != 0 {
		fid = fineosID
	}
	var id string
	if err := s.Pool.QueryRow(context.Background(), `INSERT INTO employer (employer_id, employer_fein, fineos_employer_id)
		VALUES (gen_random_uuid(), $1, $2) RETURNING employer_id::text`, fein, fid).Scan(&id); err != nil {
		tb.Fatalf("stacktest: add employer: %v", err)
	}
	return id
}

// Registrar returns a registrar on the stack: its database, user pool and
// FINEOS stub.
func (s *Stack) Registrar(tb testing.TB) *register.Registrar {
	tb.Helper()
	store, err := pfml.NewStore(context.Background(), s.Pool)
	if err != nil {
		tb.Fatalf("stacktest: %v", err)
	}
	fc, err := fineos.New(s.FineosConfig, nil)
	if err != nil {
		tb.Fatalf("stacktest: %v", err)
	}
	return &register.Registrar{
		PFML:    store,
		Rows:    lifecycle.New(s.Pool, nil, logging.Discard()),
		Cognito: cognito.New(awsconf.Cognito(s.AWS), s.Resources.UserPoolID),
		Fineos:  fc,
		Log:     logging.Discard(),
	}
}

// Suffix returns a short random suffix for unique resource names.
func Suffix() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
