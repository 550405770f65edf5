// Package config reads the environment variables both binaries share. The
// names are those of the original Python tool where it had one. Only main
// packages call FromEnv; everything else takes the resulting values.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/massgov/bulk-user-import/shared/fineos"
)

// DefaultRegion is used when neither AWS_REGION nor AWS_DEFAULT_REGION is set.
const DefaultRegion = "us-east-1"

// BudgetVarNames are the variables of the worker's fleet budgets.
var BudgetVarNames = []string{"COGNITO_GET_BUDGET", "COGNITO_CREATE_BUDGET", "COGNITO_PASSWORD_BUDGET", "FINEOS_BUDGET"}

// Config is the environment of a run.
type Config struct {
	DatabaseURL   string
	Region        string
	QueueURL      string
	DLQURL        string
	UserPoolID    string
	ResultsBucket string
	// CompletionSNSTopic and CompletionEventBus are where the maintainer
	// publishes completion events (the worker's flags default to them).
	CompletionSNSTopic string
	CompletionEventBus string
	Fineos             fineos.Config
	LogFormat          string
	LogLevel           string
	// BudgetVars are the fleet-budget variables that are set (BudgetVarNames),
	// unparsed: the worker's --*-budget flags take their defaults from them.
	BudgetVars map[string]string

	dbErrs     []error // problems with the DB_* variables
	fineosErrs []error // a partial FINEOS configuration
}

// Need names a part of the configuration a binary cannot run without.
type Need int

// Needs.
const (
	Database Need = iota
	Queue
	DLQ
	Cognito
)

// FromEnv reads the configuration through getenv (os.Getenv in main).
func FromEnv(getenv func(string) string) Config {
	c := Config{
		Region:             first(getenv, "AWS_REGION", "AWS_DEFAULT_REGION"),
		QueueURL:           strings.TrimSpace(getenv("IMPORT_QUEUE_URL")),
		DLQURL:             strings.TrimSpace(getenv("IMPORT_DLQ_URL")),
		UserPoolID:         first(getenv, "COGNITO_USER_POOL_ID", "COGNITO_IDENTITY_POOL_ID"),
		ResultsBucket:      first(getenv, "RESULTS_BUCKET", "PROCESS_CSV_DATA_BUCKET_NAME"),
		LogFormat:          first(getenv, "LOG_FORMAT"),
		CompletionSNSTopic: first(getenv, "COMPLETION_SNS_TOPIC_ARN"),
		CompletionEventBus: first(getenv, "COMPLETION_EVENT_BUS"),
		LogLevel:           first(getenv, "LOG_LEVEL"),
		Fineos: fineos.Config{
			IntegrationServicesURL: first(getenv, "FINEOS_CLIENT_INTEGRATION_SERVICES_API_URL"),
			OAuth2URL:              first(getenv, "FINEOS_CLIENT_OAUTH2_URL"),
			ClientID:               first(getenv, "FINEOS_CLIENT_OAUTH2_CLIENT_ID"),
			ClientSecret:           getenv("FINEOS_CLIENT_OAUTH2_CLIENT_SECRET"),
			UserID:                 first(getenv, "FINEOS_CLIENT_WSCOMPOSER_USER_ID"),
		},
	}
	for _, name := range BudgetVarNames {
		if v := first(getenv, name); v != "" {
			if c.BudgetVars == nil {
				c.BudgetVars = map[string]string{}
			}
			c.BudgetVars[name] = v
		}
	}
	if c.Region == "" {
		c.Region = DefaultRegion
	}
	if c.LogFormat == "" {
		c.LogFormat = "json"
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	c.DatabaseURL, c.dbErrs = databaseURL(getenv)
	if err := c.Fineos.Validate(); err != nil && c.Fineos.Enabled() {
		// Partly configured FINEOS is always an error; fully absent is
		// allowed and makes force-registration rows fail with a clear code.
		c.fineosErrs = append(c.fineosErrs, err)
	}
	return c
}

// Require returns an error naming every missing or invalid variable of the
// given needs, and a partial FINEOS configuration, all at once.
func (c Config) Require(needs ...Need) error {
	errs := append([]error(nil), c.fineosErrs...)
	for _, n := range needs {
		switch n {
		case Database:
			switch {
			case len(c.dbErrs) > 0:
				errs = append(errs, c.dbErrs...)
			case c.DatabaseURL == "":
				errs = append(errs, errors.New("DATABASE_URL (or DB_HOST, DB_USER and DB_NAME) is not set"))
			}
		case Queue:
			if c.QueueURL == "" {
				errs = append(errs, errors.New("IMPORT_QUEUE_URL is not set"))
			}
		case DLQ:
			if c.DLQURL == "" {
				errs = append(errs, errors.New("IMPORT_DLQ_URL is not set"))
			}
		case Cognito:
			if c.UserPoolID == "" {
				errs = append(errs, errors.New("COGNITO_USER_POOL_ID (or COGNITO_IDENTITY_POOL_ID) is not set"))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	return nil
}

// databaseURL builds the connection URL from DATABASE_URL or the DB_* parts.
func databaseURL(getenv func(string) string) (string, []error) {
	if u := strings.TrimSpace(getenv("DATABASE_URL")); u != "" {
		return u, nil
	}
	host, user, name := first(getenv, "DB_HOST"), first(getenv, "DB_USER"), first(getenv, "DB_NAME")
	port := first(getenv, "DB_PORT")
	if host == "" && user == "" && name == "" && port == "" {
		return "", nil
	}
	var errs []error
	for _, v := range []struct{ name, val string }{{"DB_HOST", host}, {"DB_USER", user}, {"DB_NAME", name}} {
		if v.val == "" {
			errs = append(errs, fmt.Errorf("%s is not set (needed when DATABASE_URL is not)", v.name))
		}
	}
	if port == "" {
		port = "5432"
	} else if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		errs = append(errs, fmt.Errorf("DB_PORT %q is not a port number", port))
	}
	if len(errs) > 0 {
		return "", errs
	}
	u := url.URL{Scheme: "postgres", Host: net.JoinHostPort(host, port), Path: "/" + name}
	if pw := getenv("DB_PASSWORD"); pw != "" {
		u.User = url.UserPassword(user, pw)
	} else {
		u.User = url.User(user)
	}
	return u.String(), nil
}

// first returns the first non-empty, trimmed value among the names.
func first(getenv func(string) string, names ...string) string {
	for _, n := range names {
		if v := strings.TrimSpace(getenv(n)); v != "" {
			return v
		}
	}
	return ""
}
