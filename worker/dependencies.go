package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/shared/breaker"
	"github.com/massgov/bulk-user-import/shared/cognito"
	"github.com/massgov/bulk-user-import/shared/config"
	"github.com/massgov/bulk-user-import/shared/dbpool"
	"github.com/massgov/bulk-user-import/shared/fineos"
	"github.com/massgov/bulk-user-import/shared/fleet"
	"github.com/massgov/bulk-user-import/shared/metrics"
	"github.com/massgov/bulk-user-import/shared/pfml"
	"github.com/massgov/bulk-user-import/shared/register"
	"github.com/massgov/bulk-user-import/shared/retry"
)

// misconfigured is a start-up check's verdict that waiting will not help:
// the message names the variable to fix.
type misconfigured struct{ msg string }

func (e *misconfigured) Error() string { return e.msg }

// checkDependencies checks, before anything is received, that the user
// pool exists and may be used (warning when its usernames are
// case-sensitive) and, when FINEOS is configured, that it issues a token.
// A definite misconfiguration is returned at once; a dependency that is
// down is tried again for up to wait.
func checkDependencies(ctx context.Context, cog *cognito.Client, fc *fineos.Client, cfg config.Config, wait time.Duration, log *slog.Logger) error {
	return retry.Do(ctx, retry.Policy{Initial: 500 * time.Millisecond, Max: 5 * time.Second, MaxElapsed: wait, Margin: time.Millisecond},
		func(err error) bool {
			var m *misconfigured
			return !errors.As(err, &m) && !retry.IsContextError(err)
		},
		func() error {
			pool, err := cog.DescribePool(ctx)
			if err != nil {
				f := register.Classify(register.StepCognito, err)
				switch {
				case f.Code == register.CodeCognitoPoolMissing:
					return &misconfigured{fmt.Sprintf("COGNITO_USER_POOL_ID %s: no such user pool in %s (check the variable and AWS_REGION)", cfg.UserPoolID, cfg.Region)}
				case f.Pause != "" || f.Permanent:
					return &misconfigured{fmt.Sprintf("Cognito refuses the worker's requests for the user pool %s (COGNITO_USER_POOL_ID): %v; "+
						"check the AWS credentials and that the role may call cognito-idp:DescribeUserPool, AdminGetUser, AdminCreateUser and AdminSetUserPassword on the pool", cfg.UserPoolID, err)}
				}
				return err
			}
			if pool.CaseSensitive {
				log.Warn("the user pool's usernames are case-sensitive: the import lower-cases every email, so an existing Cognito user whose email has capitals is not found (and a second one may be created)",
					"user_pool", cfg.UserPoolID)
			}
			if fc == nil {
				return nil
			}
			if err := fc.Probe(ctx); err != nil {
				var he *fineos.HTTPError
				switch {
				case errors.As(err, &he) && (he.Status == 401 || he.Status == 403):
					return &misconfigured{fmt.Sprintf("FINEOS refuses the client credentials (FINEOS_CLIENT_OAUTH2_CLIENT_ID, FINEOS_CLIENT_OAUTH2_CLIENT_SECRET) at FINEOS_CLIENT_OAUTH2_URL: HTTP %d", he.Status)}
				case errors.As(err, &he) && he.Status >= 400 && he.Status < 500 && he.Status != 429:
					return &misconfigured{fmt.Sprintf("FINEOS_CLIENT_OAUTH2_URL answered HTTP %d to a token request: check the variable", he.Status)}
				}
				return fmt.Errorf("FINEOS token endpoint: %w", err)
			}
			return nil
		},
		func(err error, wait time.Duration) {
			log.Warn("a dependency is not answering yet; retrying", "err", err, "retry_in", wait.Round(time.Millisecond).String())
		})
}

// startBreakers builds the breakers of the database, Cognito and FINEOS,
// starts their probers and the worker's registration in the fleet (its
// heartbeat, which publishes what is paused), and returns them with a
// function that stops both.
func startBreakers(ctx context.Context, pool *pgxpool.Pool, id string, store *pfml.Store, cog *cognito.Client, fc *fineos.Client,
	probeMax time.Duration, m *metrics.Worker, log *slog.Logger, conns func() dbpool.Usage) (*breaker.Set, func()) {
	fineosProbe := func(context.Context) error {
		return errors.New("FINEOS is not configured on this worker")
	}
	if fc != nil {
		fineosProbe = fc.Probe
	}
	set := breaker.NewSet(
		breaker.New(breaker.Database, store.CheckWritable, log),
		breaker.New(breaker.Cognito, cog.Probe, log),
		breaker.New(breaker.Fineos, fineosProbe, log),
	)
	reg := fleet.Register(pool, id, set.Paused, log)
	reg.Conns = conns
	for _, d := range []breaker.Dependency{breaker.Database, breaker.Cognito, breaker.Fineos} {
		m.Breaker(string(d), false)
		set.Get(d).ProbeMax = probeMax
		set.Get(d).OnChange = func(d breaker.Dependency, open bool, _ breaker.Fault) {
			m.Breaker(string(d), open)
			reg.Changed()
		}
	}
	// They outlive ctx a little: the registration is deleted last.
	bctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{}, 2)
	go func() { set.Run(bctx); done <- struct{}{} }()
	go func() { reg.Run(bctx, fleet.DefaultHeartbeat); done <- struct{}{} }()
	return set, func() {
		stop()
		<-done
		<-done
	}
}
