// Command devstack runs the local stack for development and the demo.
//
//	devstack serve      the embedded AWS emulator (SQS, S3, Cognito) and the
//	                    FINEOS stub; bootstraps them and writes the variables
//	                    to export
//	devstack bootstrap  create the queue, DLQ, buckets and user pool at
//	                    AWS_ENDPOINT_URL (LocalStack) or in a real account
//	devstack db         create the database and the PFML dev tables, seed
//	                    sample employers
//	devstack fineos     the FINEOS stub alone (for LocalStack users)
//	devstack employer   add (or update) an employer in the dev database
//	devstack events     print the completion events the local receiver
//	                    queue got (DEMO_COMPLETION_QUEUE_URL)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/localstack/bootstrap"
	"github.com/massgov/bulk-user-import/localstack/devdb"
	"github.com/massgov/bulk-user-import/localstack/emulator"
	"github.com/massgov/bulk-user-import/localstack/fineosstub"
	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/cli"
	sharedconfig "github.com/massgov/bulk-user-import/shared/config"
)

// DefaultDatabaseURL is used by "devstack db" when DATABASE_URL is unset.
const DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/bulk_user_import_dev"

const usage = `Usage: devstack serve|bootstrap|db|fineos|employer|events [flags]  (devstack CMD -h for flags)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(cli.ExitUsage)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(ctx, os.Args[2:], os.Stdout)
	case "bootstrap":
		err = runBootstrap(ctx, os.Args[2:], os.Stdout)
	case "db":
		err = runDB(ctx, os.Args[2:], os.Stdout)
	case "fineos":
		err = runFineos(ctx, os.Args[2:], os.Stdout)
	case "employer":
		err = runEmployer(ctx, os.Args[2:], os.Stdout)
	case "events":
		err = runEvents(ctx, os.Args[2:], os.Stdout)
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(cli.ExitUsage)
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(cli.ExitError)
	}
}

func specFlags(fs *flag.FlagSet) *bootstrap.Spec {
	spec := bootstrap.DefaultSpec()
	fs.StringVar(&spec.QueueName, "queue", spec.QueueName, "import queue name")
	fs.StringVar(&spec.DLQName, "dlq", spec.DLQName, "dead-letter queue name")
	fs.IntVar(&spec.MaxReceiveCount, "max-receive-count", spec.MaxReceiveCount, "attempts before SQS moves a message to the DLQ")
	fs.DurationVar(&spec.VisibilityTimeout, "visibility-timeout", spec.VisibilityTimeout, "the import queue's visibility timeout (match the worker's --visibility-timeout)")
	fs.StringVar(&spec.ResultsBucket, "results-bucket", spec.ResultsBucket, "results bucket name")
	fs.StringVar(&spec.SourceBucket, "source-bucket", spec.SourceBucket, "source bucket name (empty: none)")
	fs.StringVar(&spec.UserPoolName, "user-pool", spec.UserPoolName, "user pool name (found or created)")
	fs.StringVar(&spec.UserPoolID, "user-pool-id", "", "use this existing user pool")
	fs.StringVar(&spec.CompletionTopic, "completion-topic", spec.CompletionTopic, "SNS topic for the completion events (empty: none)")
	fs.StringVar(&spec.CompletionQueue, "completion-queue", spec.CompletionQueue, "queue subscribed to the completion topic, for the demo's receiver")
	return &spec
}

func serve(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("devstack serve", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:4566", "emulator address (port 0: any free port)")
	fineosAddr := fs.String("fineos-addr", "127.0.0.1:8089", "FINEOS stub address (port 0: any free port)")
	envFile := fs.String("env-file", "", "also write the export lines to this file, once everything is ready")
	fineosLatency := fs.Duration("fineos-latency", 0, "delay every FINEOS stub answer by this much")
	spec := specFlags(fs)
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	emu, err := emulator.Start(emulator.Options{Addr: *addr})
	if err != nil {
		return err
	}
	defer emu.Close()
	stub := fineosstub.New(fineosstub.DefaultOptions())
	stub.SetLatency(*fineosLatency)
	fineosURL, closeStub, err := listen(*fineosAddr, stub)
	if err != nil {
		return err
	}
	defer closeStub()

	cfg, err := staticConfig(ctx, emu.URL, spec.Region)
	if err != nil {
		return err
	}
	res, err := bootstrap.Ensure(ctx, bootstrap.Clients{SQS: awsconf.SQS(cfg), S3: awsconf.S3(cfg), Cognito: awsconf.Cognito(cfg), SNS: awsconf.SNS(cfg)}, *spec)
	if err != nil {
		return err
	}
	env := res.Env()
	env["AWS_ENDPOINT_URL"] = emu.URL
	env["AWS_REGION"] = spec.Region
	env["AWS_ACCESS_KEY_ID"] = "test"
	env["AWS_SECRET_ACCESS_KEY"] = "test"
	maps.Copy(env, fineosstub.DefaultOptions().Config(fineosURL).Env())
	env["FINEOS_STUB_URL"] = fineosURL
	exports := bootstrap.Exports(env)
	fmt.Fprintf(stdout, "# local stack ready: AWS emulator at %s, FINEOS stub at %s\n%s", emu.URL, fineosURL, exports)
	if *envFile != "" {
		if err := writeAtomic(*envFile, exports); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}

func runBootstrap(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("devstack bootstrap", flag.ContinueOnError)
	spec := specFlags(fs)
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	spec.Region = sharedconfig.FromEnv(os.Getenv).Region
	cfg, err := awsconf.Load(ctx, spec.Region)
	if err != nil {
		return err
	}
	res, err := bootstrap.Ensure(ctx, bootstrap.Clients{SQS: awsconf.SQS(cfg), S3: awsconf.S3(cfg), Cognito: awsconf.Cognito(cfg), SNS: awsconf.SNS(cfg)}, *spec)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, bootstrap.Exports(res.Env()))
	return nil
}

func runDB(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("devstack db", flag.ContinueOnError)
	seed := fs.Bool("seed", true, "insert the sample employers")
	recreate := fs.Bool("recreate", false, "drop and recreate the database first (only for names ending in _dev or _demo)")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		url = DefaultDatabaseURL
	}
	if *recreate {
		if err := dropDatabase(ctx, url); err != nil {
			return err
		}
	}
	if err := devdb.EnsureDatabase(ctx, url); err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := devdb.ApplySchema(ctx, pool); err != nil {
		return err
	}
	if *seed {
		if err := devdb.Seed(ctx, pool); err != nil {
			return err
		}
	}
	cfg := pool.Config().ConnConfig
	fmt.Fprintf(stdout, "database %s on %s:%d ready (PFML dev tables%s)\n", cfg.Database, cfg.Host, cfg.Port, map[bool]string{true: ", sample employers", false: ""}[*seed])
	return nil
}

// runEmployer adds an employer to the development database, as fixing the
// data before a replay would.
func runEmployer(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("devstack employer", flag.ContinueOnError)
	fein := fs.String("fein", "", "the employer's FEIN, 9 digits (required)")
	fineosID := fs.Int("fineos-id", 0, "its fineos_employer_id (0: none)")
	name := fs.String("name", "", "its name")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	if len(*fein) != 9 || strings.Trim(*fein, "0123456789") != "" {
		return fmt.Errorf("--fein must be 9 digits")
	}
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		url = DefaultDatabaseURL
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var fid any
	if *fineosID != 0 {
		fid = *fineosID
	}
	tag, err := conn.Exec(ctx, `UPDATE employer SET fineos_employer_id = $2, employer_name = coalesce(nullif($3, ''), employer_name), updated_at = now()
		WHERE employer_fein = $1`, *fein, fid, *name)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		if _, err := conn.Exec(ctx, `INSERT INTO employer (employer_id, employer_fein, fineos_employer_id, employer_name)
			VALUES (gen_random_uuid(), $1, $2, nullif($3, ''))`, *fein, fid, *name); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "employer %s ready\n", *fein)
	return nil
}

// dropDatabase drops a development database. It refuses other names, so a
// mistaken DATABASE_URL cannot destroy real data.
func dropDatabase(ctx context.Context, url string) error {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return err
	}
	name := cfg.Database
	if !strings.HasSuffix(name, "_dev") && !strings.HasSuffix(name, "_demo") {
		return fmt.Errorf("refusing to drop database %q: --recreate only drops databases whose name ends in _dev or _demo", name)
	}
	cfg.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

func runFineos(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("devstack fineos", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8089", "address to listen on")
	latency := fs.Duration("latency", 0, "delay every answer by this much")
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	opts := fineosstub.DefaultOptions()
	stub := fineosstub.New(opts)
	stub.SetLatency(*latency)
	url, closeStub, err := listen(*addr, stub)
	if err != nil {
		return err
	}
	defer closeStub()
	fmt.Fprintf(stdout, "# FINEOS stub at %s\n%s", url, bootstrap.Exports(opts.Config(url).Env()))
	<-ctx.Done()
	return nil
}

// listen serves h on addr and returns its base URL.
func listen(addr string, h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

// staticConfig is an SDK configuration for the embedded emulator.
func staticConfig(ctx context.Context, endpoint, region string) (aws.Config, error) {
	return awsconf.Load(ctx, region,
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("test", "test", "")),
		config.WithBaseEndpoint(endpoint))
}

func writeAtomic(path, content string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".env-*")
	if err != nil {
		return err
	}
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
