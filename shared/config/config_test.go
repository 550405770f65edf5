package config

import (
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestFromEnvAcceptsTheOriginalNames(t *testing.T) {
	t.Parallel()
	c := FromEnv(env(map[string]string{
		"DB_HOST": "db.internal", "DB_USER": "pfml", "DB_PASSWORD": "p@ss:/word", "DB_NAME": "massgov_pfml",
		"COGNITO_IDENTITY_POOL_ID": "us-east-1_abc", "PROCESS_CSV_DATA_BUCKET_NAME": "results",
		"IMPORT_QUEUE_URL": "q", "IMPORT_DLQ_URL": "d",
	}))
	if err := c.Require(Database, Queue, DLQ, Cognito); err != nil {
		t.Fatal(err)
	}
	if c.DatabaseURL != "postgres://pfml:p%40ss%3A%2Fword@db.internal:5432/massgov_pfml" {
		t.Errorf("database URL %q", c.DatabaseURL)
	}
	if c.UserPoolID != "us-east-1_abc" || c.ResultsBucket != "results" || c.Region != DefaultRegion {
		t.Errorf("config %+v", c)
	}
	if c.Fineos.Enabled() {
		t.Error("FINEOS enabled without variables")
	}
}

func TestNewNamesTakePrecedence(t *testing.T) {
	t.Parallel()
	c := FromEnv(env(map[string]string{
		"DATABASE_URL": "postgres://x/y", "DB_HOST": "ignored",
		"COGNITO_USER_POOL_ID": "new", "COGNITO_IDENTITY_POOL_ID": "old",
		"RESULTS_BUCKET": "new", "PROCESS_CSV_DATA_BUCKET_NAME": "old", "AWS_REGION": "us-west-2",
	}))
	if c.DatabaseURL != "postgres://x/y" || c.UserPoolID != "new" || c.ResultsBucket != "new" || c.Region != "us-west-2" {
		t.Errorf("config %+v", c)
	}
}

func TestRequireNamesEveryMissingVariable(t *testing.T) {
	t.Parallel()
	err := FromEnv(env(map[string]string{"FINEOS_CLIENT_OAUTH2_URL": "https://x/token"})).Require(Database, Queue, DLQ, Cognito)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"DATABASE_URL", "IMPORT_QUEUE_URL", "IMPORT_DLQ_URL", "COGNITO_USER_POOL_ID",
		"FINEOS_CLIENT_INTEGRATION_SERVICES_API_URL", "FINEOS_CLIENT_OAUTH2_CLIENT_SECRET"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
	err = FromEnv(env(map[string]string{"DB_HOST": "h", "DB_PORT": "x"})).Require(Database)
	for _, want := range []string{"DB_USER", "DB_NAME", "DB_PORT"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
}
