package deploy

import (
	"crypto/sha1"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The Terraform tests run the real terraform and AWS provider, offline:
// fmt, init from a local plugin directory, validate, and plans of the
// example environment under several names and settings, whose planned
// values are checked. Names, ARNs and URLs are derived in the module, so
// the plan holds the policies and task definitions in full.

const (
	account = "123456789012"
	region  = "us-east-1"
)

// tf runs terraform in dir with an environment that keeps it offline and
// quiet, and returns its combined output.
func tf(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("terraform", args...)
	cmd.Dir = dir
	rc := filepath.Join(t.TempDir(), "terraformrc")
	if err := os.WriteFile(rc, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+rc, "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1", "TF_INPUT=0",
		"AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_EC2_METADATA_DISABLED=true")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

var (
	workspaceOnce sync.Once
	workspaceDir  string
	workspaceErr  error
)

// workspace returns a copy of the example environment (and the module)
// initialised from the plugin directory, once per test binary. It skips,
// saying why, when terraform or the plugins are not on this machine.
func workspace(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("terraform"); err != nil {
		t.Skip("terraform is not installed on this machine: the tests that run it are skipped (they need terraform and the AWS provider in /opt/tf-plugins or $TF_PLUGIN_DIR)")
	}
	plugins := os.Getenv("TF_PLUGIN_DIR")
	if plugins == "" {
		plugins = "/opt/tf-plugins"
	}
	if _, err := os.Stat(filepath.Join(plugins, "registry.terraform.io", "hashicorp", "aws")); err != nil {
		t.Skipf("no AWS provider under %s: the tests that run terraform are skipped (set TF_PLUGIN_DIR)", plugins)
	}
	workspaceOnce.Do(func() {
		dir, err := os.MkdirTemp("", "bui-terraform-")
		if err != nil {
			workspaceErr = err
			return
		}
		workspaceDir = filepath.Join(dir, "terraform")
		if err := os.CopyFS(workspaceDir, os.DirFS("terraform")); err != nil {
			workspaceErr = err
			return
		}
		env := filepath.Join(workspaceDir, "environments", "example")
		// Fake credentials; nothing checks them, nothing is called: the
		// account is given, so no caller-identity lookup happens.
		override := `provider "aws" {
  region                      = "` + region + `"
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
}
`
		if err := os.WriteFile(filepath.Join(env, "offline_override.tf"), []byte(override), 0o600); err != nil {
			workspaceErr = err
			return
		}
		if out, err := tf(t, env, "init", "-input=false", "-backend=false", "-plugin-dir="+plugins); err != nil {
			workspaceErr = fmt.Errorf("terraform init: %v\n%s", err, out)
		}
	})
	if workspaceErr != nil {
		t.Fatal(workspaceErr)
	}
	return filepath.Join(workspaceDir, "environments", "example")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if workspaceDir != "" {
		os.RemoveAll(filepath.Dir(workspaceDir))
	}
	os.Exit(code)
}

func TestTerraformIsFormattedAndValid(t *testing.T) {
	dir := workspace(t)
	if out, err := tf(t, "terraform", "fmt", "-check", "-recursive", "-diff"); err != nil {
		t.Fatalf("terraform fmt -check: %v\n%s", err, out)
	}
	if out, err := tf(t, dir, "validate"); err != nil || !strings.Contains(out, "The configuration is valid") {
		t.Fatalf("terraform validate: %v\n%s", err, out)
	}
}

// scenario is one environment to plan.
type scenario struct {
	env     string
	trigger bool
	fineos  bool
	// sourceBucket: an existing source bucket ("": the module creates
	// one); prefix: the source_prefix given (nil: the default, incoming/);
	// eventbridge: source_bucket_enable_eventbridge.
	sourceBucket string
	prefix       *string
	eventbridge  bool
	emails       []string // completion_emails
	bus          string   // completion_event_bus
	extra        string   // more tfvars
}

func ptr[T any](v T) *T { return &v }

// sourcePrefix is the source_prefix the module gets.
func (s scenario) sourcePrefix() string {
	if s.prefix == nil {
		return "incoming/"
	}
	return *s.prefix
}

// readPrefix is the part of the source bucket the splitter may read: all
// of the module's own bucket, source_prefix of an existing one.
func (s scenario) readPrefix() string {
	if s.sourceBucket == "" {
		return ""
	}
	return s.sourcePrefix()
}

func (s scenario) String() string {
	bucket := "created"
	if s.sourceBucket != "" {
		bucket = fmt.Sprintf("existing/prefix=%q/eventbridge=%t", s.sourcePrefix(), s.eventbridge)
	}
	return fmt.Sprintf("%s/trigger=%t/fineos=%t/source=%s/emails=%d/bus=%q", s.env, s.trigger, s.fineos, bucket, len(s.emails), s.bus)
}

func (s scenario) tfvars() string {
	v := fmt.Sprintf(`environment            = %q
account_id             = %q
image                  = "%s.dkr.ecr.%s.amazonaws.com/bulk-user-import:1.0.0"
subnet_ids             = ["subnet-0aaa", "subnet-0bbb"]
security_group_ids     = ["sg-0ccc"]
cognito_user_pool_id   = "us-east-1_AbCdEfGhI"
db_host                = "pfml.cluster-xyz.us-east-1.rds.amazonaws.com"
db_name                = "massgov_pfml"
db_user                = "pfml_api"
db_password_secret_arn = "arn:aws:ssm:us-east-1:%s:parameter/pfml/db-password"
enable_s3_trigger      = %t
`, s.env, account, account, region, account, s.trigger)
	if s.fineos {
		v += fmt.Sprintf(`fineos = {
  integration_services_api_url = "https://fineos.example.com/integration-services/"
  oauth2_url                   = "https://fineos.example.com/oauth2/token"
  oauth2_client_id             = "pfml-bulk-import"
  wscomposer_user_id           = "CONTENT"
  client_secret_arn            = "arn:aws:secretsmanager:us-east-1:%s:secret:pfml/fineos-AbCdEf"
}
`, account)
	}
	if s.sourceBucket != "" {
		v += fmt.Sprintf("source_bucket_name = %q\nsource_bucket_enable_eventbridge = %t\n", s.sourceBucket, s.eventbridge)
	}
	if s.prefix != nil {
		v += fmt.Sprintf("source_prefix = %q\n", *s.prefix)
	}
	if len(s.emails) > 0 {
		js, _ := json.Marshal(s.emails)
		v += fmt.Sprintf("completion_emails = %s\n", js)
	}
	if s.bus != "" {
		v += fmt.Sprintf("completion_event_bus = %q\n", s.bus)
	}
	return v + s.extra
}

// plan plans the scenario (args: more plan flags) and returns the plan as
// terraform show -json prints it, or the error output.
func plan(t *testing.T, dir string, s scenario, args ...string) (map[string]any, string, error) {
	t.Helper()
	vars := filepath.Join(t.TempDir(), "test.tfvars")
	if err := os.WriteFile(vars, []byte(s.tfvars()), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "plan.bin")
	if msg, err := tf(t, dir, append([]string{"plan", "-input=false", "-lock=false", "-refresh=false", "-var-file=" + vars, "-out=" + out}, args...)...); err != nil {
		return nil, msg, err
	}
	js, err := tf(t, dir, "show", "-json", out)
	if err != nil {
		t.Fatalf("terraform show: %v\n%s", err, js)
	}
	// show prints warnings about the CLI configuration before the JSON.
	js = js[strings.Index(js, "{"):]
	var p map[string]any
	if err := json.Unmarshal([]byte(js), &p); err != nil {
		t.Fatalf("plan JSON: %v", err)
	}
	return p, "", nil
}

// planned holds a plan's resources by address (module prefix dropped).
type planned map[string]map[string]any

func resources(p map[string]any) planned {
	out := planned{}
	var walk func(m map[string]any)
	walk = func(m map[string]any) {
		rs, _ := m["resources"].([]any)
		for _, r := range rs {
			rm := r.(map[string]any)
			addr := strings.TrimPrefix(rm["address"].(string), "module.bulk_user_import.")
			v, _ := rm["values"].(map[string]any)
			out[addr] = v
		}
		cms, _ := m["child_modules"].([]any)
		for _, c := range cms {
			walk(c.(map[string]any))
		}
	}
	walk(p["planned_values"].(map[string]any)["root_module"].(map[string]any))
	return out
}

func (p planned) str(t *testing.T, addr, attr string) string {
	t.Helper()
	r, ok := p[addr]
	if !ok {
		t.Fatalf("%s is not planned", addr)
	}
	v, ok := r[attr].(string)
	if !ok {
		t.Fatalf("%s.%s is not a known string in the plan: %v", addr, attr, r[attr])
	}
	return v
}

// iamStatement is an IAM policy iamStatement.
type iamStatement struct {
	Sid       string
	Effect    string
	Principal any
	Action    any
	Resource  any
	Condition map[string]map[string]any
}

func planPolicy(t *testing.T, doc string) map[string]iamStatement {
	t.Helper()
	var p struct{ Statement []iamStatement }
	if err := json.Unmarshal([]byte(doc), &p); err != nil {
		t.Fatalf("policy %s: %v", doc, err)
	}
	out := map[string]iamStatement{}
	for _, s := range p.Statement {
		out[s.Sid] = s
	}
	return out
}

func list(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			out = append(out, fmt.Sprint(e))
		}
		return out
	}
	return nil
}

// container is a container definition.
type container struct {
	Name        string
	Command     []string
	EntryPoint  []string
	Environment []struct{ Name, Value string }
	Secrets     []struct{ Name, ValueFrom string }
	StopTimeout int
}

func (c container) env() map[string]string {
	out := map[string]string{}
	for _, e := range c.Environment {
		out[e.Name] = e.Value
	}
	return out
}

func (c container) secrets() []string {
	var out []string
	for _, s := range c.Secrets {
		out = append(out, s.Name)
	}
	slices.Sort(out)
	return out
}

func containers(t *testing.T, p planned, addr string) container {
	t.Helper()
	var cs []container
	if err := json.Unmarshal([]byte(p.str(t, addr, "container_definitions")), &cs); err != nil || len(cs) != 1 {
		t.Fatalf("%s container definitions: %v (%d)", addr, err, len(cs))
	}
	return cs[0]
}

func TestTheExamplePlansOfflineForEveryEnvironmentName(t *testing.T) {
	dir := workspace(t)
	scenarios := []scenario{
		{env: "test"},
		{env: "performance", trigger: true, fineos: true},
		{env: "breakfix", trigger: true},
		{env: "training", fineos: true},
		{env: "training-long-name", trigger: true, fineos: true, extra: "cpu_architecture = \"ARM64\"\n"}, // 18: the longest allowed
		// The module's own bucket with another prefix, completion e-mails.
		{env: "stage", trigger: true, prefix: ptr("uploads/admins/"), emails: []string{"ops@example.com", "lead@example.com"}},
		// An existing (shared) bucket: the trigger with the bucket owner's
		// EventBridge notifications, then the module's; a prefix or none.
		{env: "prod", trigger: true, sourceBucket: "massgov-pfml-prod-uploads", prefix: ptr("leave-admins/"), emails: []string{"ops@example.com"}, bus: "pfml-ops"},
		{env: "uat", trigger: true, fineos: true, sourceBucket: "massgov-pfml-uat-uploads", prefix: ptr(""), eventbridge: true},
		{env: "long", trigger: true, sourceBucket: "pfml.uploads.example", eventbridge: true, bus: "arn:aws:events:us-east-1:210987654321:event-bus/central"},
		{env: "dev", sourceBucket: "massgov-pfml-dev-uploads", prefix: ptr("bulk/leave-admins/"), eventbridge: true},
	}
	for _, s := range scenarios {
		t.Run(s.String(), func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			p, msg, err := plan(t, dir, s)
			if err != nil {
				t.Fatalf("plan: %v\n%s", err, msg)
			}
			t.Logf("planned in %s", time.Since(start).Round(100*time.Millisecond))
			checkPlan(t, s, resources(p))
			checkOutputs(t, s, p)
		})
	}
}

func checkPlan(t *testing.T, s scenario, p planned) {
	name := "pfml-" + s.env + "-bulk-user-import"
	arn := func(service, resource string) string {
		return fmt.Sprintf("arn:aws:%s:%s:%s:%s", service, region, account, resource)
	}
	// Names within AWS's limits.
	for addr, r := range p {
		for attr, limit := range map[string]int{"name": 64, "bucket": 63, "alarm_name": 255, "dashboard_name": 255, "family": 255} {
			v, ok := r[attr].(string)
			if !ok {
				continue
			}
			if strings.HasPrefix(addr, "aws_sqs_queue.") && attr == "name" {
				limit = 80
			}
			if len(v) > limit {
				t.Errorf("%s.%s %q: %d characters, over %d", addr, attr, v, len(v), limit)
			}
		}
	}
	results := p.str(t, "aws_s3_bucket.results", "bucket")
	if !strings.HasPrefix(results, name+"-results-") || strings.ToLower(results) != results {
		t.Errorf("results bucket %q", results)
	}
	// The source bucket: the module's own, configured like the results
	// bucket, or an existing one the module creates and configures nothing of.
	source := s.sourceBucket
	if source == "" {
		source = p.str(t, "aws_s3_bucket.source[0]", "bucket")
		if !strings.HasPrefix(source, name+"-source-") || strings.ToLower(source) != source {
			t.Errorf("source bucket %q", source)
		}
		for _, r := range []string{"aws_s3_bucket_server_side_encryption_configuration", "aws_s3_bucket_public_access_block", "aws_s3_bucket_ownership_controls", "aws_s3_bucket_policy"} {
			if _, ok := p[r+`.this["source"]`]; !ok {
				t.Errorf("the source bucket has no %s", r)
			}
		}
	} else {
		for addr := range p {
			if strings.HasPrefix(addr, "aws_s3_bucket.source") || strings.HasPrefix(addr, "aws_s3_bucket_lifecycle_configuration.source") || strings.HasSuffix(addr, `["source"]`) {
				t.Errorf("with the existing bucket %s, the module plans %s", s.sourceBucket, addr)
			}
		}
	}
	sourceARN := "arn:aws:s3:::" + source

	// The queue: redrive to its DLQ after 5 receives, the worker's visibility timeout.
	var redrive struct {
		DeadLetterTargetArn string
		MaxReceiveCount     int
	}
	if err := json.Unmarshal([]byte(p.str(t, "aws_sqs_queue.import", "redrive_policy")), &redrive); err != nil ||
		redrive.DeadLetterTargetArn != arn("sqs", name+"-dlq") || redrive.MaxReceiveCount != 5 {
		t.Errorf("redrive policy %+v, %v", redrive, err)
	}
	if v := p["aws_sqs_queue.import"]["visibility_timeout_seconds"]; v != 60.0 {
		t.Errorf("visibility timeout %v", v)
	}
	if v := p["aws_sqs_queue.dlq"]["message_retention_seconds"]; v != 1209600.0 {
		t.Errorf("DLQ retention %v", v)
	}

	// The task definitions: commands, the environment, the secrets each needs.
	w := containers(t, p, "aws_ecs_task_definition.worker")
	for _, flag := range [][2]string{{"--visibility-timeout", "60s"}, {"--shutdown-timeout", "20s"}, {"--retention", "30d"}, {"--db-max-conns", "8"},
		{"--cognito-create-budget", "40"}, {"--cognito-get-budget", "80"}, {"--cognito-password-budget", "20"}, {"--fineos-budget", "40"}} {
		i := slices.Index(w.Command, flag[0])
		if i < 0 || i+1 >= len(w.Command) || w.Command[i+1] != flag[1] {
			t.Errorf("worker command %v lacks %s %s", w.Command, flag[0], flag[1])
		}
	}
	// The budgets govern: no per-worker caps.
	for _, flag := range []string{"--cognito-create-rate", "--cognito-get-rate", "--cognito-password-rate", "--fineos-rate"} {
		if slices.Contains(w.Command, flag) {
			t.Errorf("worker command %v has %s", w.Command, flag)
		}
	}
	if w.StopTimeout != 30 {
		t.Errorf("worker stop timeout %d", w.StopTimeout)
	}
	wantSecrets := []string{"DB_PASSWORD"}
	if s.fineos {
		wantSecrets = []string{"DB_PASSWORD", "FINEOS_CLIENT_OAUTH2_CLIENT_SECRET"}
	}
	if got := w.secrets(); !slices.Equal(got, wantSecrets) {
		t.Errorf("worker secrets %v, want %v", got, wantSecrets)
	}
	env := w.env()
	if env["IMPORT_QUEUE_URL"] != fmt.Sprintf("https://sqs.%s.amazonaws.com/%s/%s", region, account, name) ||
		env["IMPORT_DLQ_URL"] != fmt.Sprintf("https://sqs.%s.amazonaws.com/%s/%s-dlq", region, account, name) ||
		env["RESULTS_BUCKET"] != results || env["COGNITO_USER_POOL_ID"] != "us-east-1_AbCdEfGhI" {
		t.Errorf("worker environment %v", env)
	}
	if _, ok := env["FINEOS_CLIENT_OAUTH2_URL"]; ok != s.fineos {
		t.Errorf("worker FINEOS environment present %v, want %v", ok, s.fineos)
	}
	for _, td := range []string{"aws_ecs_task_definition.splitter", "aws_ecs_task_definition.dlq_tools"} {
		c := containers(t, p, td)
		if got := c.secrets(); !slices.Equal(got, []string{"DB_PASSWORD"}) {
			t.Errorf("%s secrets %v: only the database password", td, got)
		}
		if _, ok := c.env()["FINEOS_CLIENT_OAUTH2_URL"]; ok {
			t.Errorf("%s has the FINEOS environment", td)
		}
		if c.env()["IMPORT_QUEUE_URL"] != env["IMPORT_QUEUE_URL"] {
			t.Errorf("%s queue %q", td, c.env()["IMPORT_QUEUE_URL"])
		}
	}
	if c := containers(t, p, "aws_ecs_task_definition.dlq_tools"); !slices.Equal(c.EntryPoint, []string{"/usr/local/bin/worker", "dlq"}) {
		t.Errorf("dlq tools entry point %v", c.EntryPoint)
	}
	for _, td := range []string{"aws_ecs_task_definition.worker", "aws_ecs_task_definition.splitter", "aws_ecs_task_definition.dlq_tools"} {
		rp, _ := p[td]["runtime_platform"].([]any)
		arch := "X86_64"
		if strings.Contains(s.extra, "ARM64") {
			arch = "ARM64"
		}
		if len(rp) != 1 || rp[0].(map[string]any)["cpu_architecture"] != arch {
			t.Errorf("%s runtime platform %v", td, p[td]["runtime_platform"])
		}
	}

	// The IAM statements.
	worker := planPolicy(t, p.str(t, "aws_iam_role_policy.worker", "policy"))
	if got := list(worker["ConsumeImportQueue"].Resource); !slices.Equal(got, []string{arn("sqs", name)}) {
		t.Errorf("worker queue iamStatement on %v", got)
	}
	if got := list(worker["CognitoUsers"].Action); !slices.Contains(got, "cognito-idp:DescribeUserPool") || !slices.Contains(got, "cognito-idp:AdminCreateUser") {
		t.Errorf("worker Cognito actions %v", got)
	}
	if got := list(worker["WriteResults"].Resource); !slices.Equal(got, []string{"arn:aws:s3:::" + results + "/*"}) {
		t.Errorf("worker results iamStatement on %v", got)
	}
	// The splitter reads the sources (a prefix of an existing bucket) and
	// may list them, so that a missing key reads 404, not 403.
	splitter := planPolicy(t, p.str(t, "aws_iam_role_policy.splitter", "policy"))
	if got := list(splitter["ReadSources"].Resource); !slices.Equal(got, []string{sourceARN + "/" + s.readPrefix() + "*"}) {
		t.Errorf("splitter GetObject on %v, want %s/%s*", got, sourceARN, s.readPrefix())
	}
	lb := splitter["MissingKeysReadNotFound"]
	if !slices.Equal(list(lb.Action), []string{"s3:ListBucket"}) || !slices.Equal(list(lb.Resource), []string{sourceARN}) || lb.Effect != "Allow" {
		t.Errorf("splitter ListBucket statement %+v, want s3:ListBucket on %s", lb, sourceARN)
	}
	if s.readPrefix() == "" {
		if len(lb.Condition) != 0 {
			t.Errorf("splitter ListBucket on the whole bucket has conditions %v", lb.Condition)
		}
	} else if got := list(lb.Condition["StringLikeIfExists"]["s3:prefix"]); len(lb.Condition) != 1 || !slices.Equal(got, []string{s.readPrefix() + "*"}) {
		t.Errorf("splitter ListBucket conditions %v, want StringLikeIfExists s3:prefix %s*", lb.Condition, s.readPrefix())
	}
	exec := planPolicy(t, p.str(t, "aws_iam_role_policy.execution_secrets", "policy"))
	if s.fineos && !slices.Contains(list(exec["ReadSecrets"].Resource), "arn:aws:secretsmanager:us-east-1:"+account+":secret:pfml/fineos-AbCdEf") {
		t.Errorf("execution role cannot read the FINEOS secret: %v", exec)
	}
	if got := list(exec["ReadParameters"].Resource); !slices.Equal(got, []string{"arn:aws:ssm:us-east-1:" + account + ":parameter/pfml/db-password"}) {
		t.Errorf("execution role parameters %v", got)
	}

	// The S3 trigger, on or off, on either bucket; the S3 -> EventBridge
	// notification is the module's on its own bucket, on an existing one
	// only when asked (it is exclusive per bucket).
	_, hasRule := p["aws_cloudwatch_event_rule.csv_uploaded[0]"]
	if hasRule != s.trigger {
		t.Fatalf("S3 trigger planned %v, want %v", hasRule, s.trigger)
	}
	notification, hasNotification := p["aws_s3_bucket_notification.source[0]"]
	if want := s.trigger && (s.sourceBucket == "" || s.eventbridge); hasNotification != want {
		t.Errorf("S3 -> EventBridge notification planned %v, want %v", hasNotification, want)
	}
	if hasNotification && (notification["eventbridge"] != true || s.sourceBucket != "" && notification["bucket"] != s.sourceBucket) {
		t.Errorf("S3 notification %v, want EventBridge on %s", notification, source)
	}
	if s.trigger {
		events := planPolicy(t, p.str(t, "aws_iam_role_policy.events[0]", "policy"))
		run := events["RunSplitter"]
		if got := list(run.Resource); !slices.Equal(got, []string{arn("ecs", "task-definition/"+name+"-splitter:*")}) {
			t.Errorf("RunTask allowed on %v: it needs every revision (family:*)", got)
		}
		if got := list(run.Condition["ArnEquals"]["ecs:cluster"]); !slices.Equal(got, []string{arn("ecs", "cluster/"+name)}) {
			t.Errorf("RunTask cluster condition %v", got)
		}
		pass := events["PassTaskRoles"]
		if got := list(pass.Condition["StringEquals"]["iam:PassedToService"]); !slices.Equal(got, []string{"ecs-tasks.amazonaws.com"}) {
			t.Errorf("PassRole condition %v", pass.Condition)
		}
		if got := list(pass.Resource); len(got) != 2 {
			t.Errorf("PassRole on %v", got)
		}
		var pattern struct {
			Detail struct {
				Bucket struct{ Name []string }
				Object struct{ Key []map[string]string }
			}
		}
		if err := json.Unmarshal([]byte(p.str(t, "aws_cloudwatch_event_rule.csv_uploaded[0]", "event_pattern")), &pattern); err != nil ||
			!slices.Equal(pattern.Detail.Bucket.Name, []string{source}) ||
			len(pattern.Detail.Object.Key) != 1 || pattern.Detail.Object.Key[0]["wildcard"] != s.sourcePrefix()+"*.csv" {
			t.Errorf("event pattern %+v, %v", pattern, err)
		}
		target := p["aws_cloudwatch_event_target.splitter[0]"]
		retry, _ := target["retry_policy"].([]any)
		if len(retry) != 1 || retry[0].(map[string]any)["maximum_retry_attempts"] != 10.0 {
			t.Errorf("event target retry policy %v", target["retry_policy"])
		}
		if _, ok := p["aws_sqs_queue.trigger_dlq[0]"]; !ok {
			t.Error("no dead-letter queue for failed starts")
		}
		if dl, _ := target["dead_letter_config"].([]any); len(dl) != 1 {
			t.Errorf("event target dead-letter config %v", target["dead_letter_config"])
		}
		if _, ok := p["aws_cloudwatch_metric_alarm.trigger_failed[0]"]; !ok {
			t.Error("no alarm on failed starts")
		}
	}

	checkCompletions(t, s, p, name)

	// An alarm when a splitter or DLQ-tool task exits non-zero.
	var failed struct {
		Detail struct {
			Group      []string
			Containers struct{ ExitCode []map[string]float64 }
		}
	}
	if err := json.Unmarshal([]byte(p.str(t, "aws_cloudwatch_event_rule.task_failed", "event_pattern")), &failed); err != nil ||
		!slices.Equal(failed.Detail.Group, []string{"family:" + name + "-splitter", "family:" + name + "-dlq-tools"}) ||
		len(failed.Detail.Containers.ExitCode) != 1 || failed.Detail.Containers.ExitCode[0]["anything-but"] != 0 {
		t.Errorf("task-failed pattern %+v, %v", failed, err)
	}
	if p.str(t, "aws_cloudwatch_metric_alarm.task_failed", "metric_name") != "MatchedEvents" {
		t.Error("task-failed alarm")
	}

	// The dashboard.
	checkDashboard(t, p.str(t, "aws_cloudwatch_dashboard.this", "dashboard_body"), name)
}

// checkCompletions checks the completion topic (encrypted, TLS only), its
// e-mail subscriptions, the worker's right to publish and its environment.
func checkCompletions(t *testing.T, s scenario, p planned, name string) {
	t.Helper()
	topic := name + "-completions"
	topicARN := fmt.Sprintf("arn:aws:sns:%s:%s:%s", region, account, topic)
	if got := p.str(t, "aws_sns_topic.completions", "name"); got != topic {
		t.Errorf("completion topic %q, want %q", got, topic)
	}
	if got := p.str(t, "aws_sns_topic.completions", "kms_master_key_id"); got != "alias/aws/sns" {
		t.Errorf("completion topic key %q, want alias/aws/sns", got)
	}
	deny := planPolicy(t, p.str(t, "aws_sns_topic_policy.completions", "policy"))["DenyInsecureTransport"]
	if deny.Effect != "Deny" || !slices.Contains(list(deny.Action), "sns:Publish") || !slices.Equal(list(deny.Resource), []string{topicARN}) ||
		fmt.Sprint(deny.Principal) != "map[AWS:*]" || !slices.Equal(list(deny.Condition["Bool"]["aws:SecureTransport"]), []string{"false"}) {
		t.Errorf("completion topic policy: no TLS-only deny on %s: %+v", topicARN, deny)
	}
	var subscribed []string
	for addr, r := range p {
		if !strings.HasPrefix(addr, "aws_sns_topic_subscription.completion_emails[") {
			continue
		}
		if r["protocol"] != "email" {
			t.Errorf("%s protocol %v", addr, r["protocol"])
		}
		subscribed = append(subscribed, fmt.Sprint(r["endpoint"]))
	}
	want := slices.Clone(s.emails)
	slices.Sort(want)
	slices.Sort(subscribed)
	if !slices.Equal(subscribed, want) {
		t.Errorf("completion e-mail subscriptions %v, want %v", subscribed, want)
	}

	worker := planPolicy(t, p.str(t, "aws_iam_role_policy.worker", "policy"))
	if pub := worker["PublishCompletions"]; !slices.Equal(list(pub.Action), []string{"sns:Publish"}) || !slices.Equal(list(pub.Resource), []string{topicARN}) {
		t.Errorf("worker publish statement %+v, want sns:Publish on %s", pub, topicARN)
	}
	put, ok := worker["PutCompletionEvents"]
	if ok != (s.bus != "") {
		t.Errorf("worker events:PutEvents statement present %v, want %v", ok, s.bus != "")
	}
	if ok {
		busARN := s.bus
		if !strings.HasPrefix(busARN, "arn:") {
			busARN = fmt.Sprintf("arn:aws:events:%s:%s:event-bus/%s", region, account, s.bus)
		}
		if !slices.Equal(list(put.Action), []string{"events:PutEvents"}) || !slices.Equal(list(put.Resource), []string{busARN}) {
			t.Errorf("worker put-events statement %+v, want events:PutEvents on %s", put, busARN)
		}
	}
	env := containers(t, p, "aws_ecs_task_definition.worker").env()
	if env["COMPLETION_SNS_TOPIC_ARN"] != topicARN {
		t.Errorf("worker COMPLETION_SNS_TOPIC_ARN %q, want %q", env["COMPLETION_SNS_TOPIC_ARN"], topicARN)
	}
	if bus, ok := env["COMPLETION_EVENT_BUS"]; ok != (s.bus != "") || bus != s.bus {
		t.Errorf("worker COMPLETION_EVENT_BUS %q (set %v), want %q", bus, ok, s.bus)
	}
}

// checkOutputs checks the outputs that tell where the sources are.
func checkOutputs(t *testing.T, s scenario, plan map[string]any) {
	t.Helper()
	outputs, _ := plan["planned_values"].(map[string]any)["outputs"].(map[string]any)
	value := func(name string) any {
		o, _ := outputs[name].(map[string]any)
		return o["value"]
	}
	source := s.sourceBucket
	if source == "" {
		source, _ = value("source_bucket").(string)
		if !strings.Contains(source, "-source-") {
			t.Errorf("source_bucket output %q", source)
		}
	} else if got := value("source_bucket"); got != source {
		t.Errorf("source_bucket output %v, want %s", got, source)
	}
	if got := value("source_bucket_arn"); got != "arn:aws:s3:::"+source {
		t.Errorf("source_bucket_arn output %v", got)
	}
	if got := value("source_prefix"); got != s.sourcePrefix() {
		t.Errorf("source_prefix output %v, want %q", got, s.sourcePrefix())
	}
	if _, ok := outputs["completion_topic_arn"]; !ok {
		t.Error("no completion_topic_arn output")
	}
}

// checkDashboard checks the dashboard's widgets: the queue's backlog and
// oldest message, the DLQ, the running workers, the rows, the errors by
// code and the breakers.
func checkDashboard(t *testing.T, body, name string) {
	t.Helper()
	var d struct {
		Widgets []struct {
			Type       string
			Properties struct {
				Title   string
				Metrics [][]any
			}
		}
	}
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatalf("dashboard body: %v", err)
	}
	var seen []string
	for _, w := range d.Widgets {
		if w.Type != "metric" || w.Properties.Title == "" || len(w.Properties.Metrics) == 0 {
			t.Errorf("widget %+v", w)
		}
		for _, m := range w.Properties.Metrics {
			var parts []string
			for _, x := range m {
				switch v := x.(type) {
				case string:
					parts = append(parts, v)
				case map[string]any:
					if e, ok := v["expression"].(string); ok {
						parts = append(parts, e)
					}
				}
			}
			seen = append(seen, strings.Join(parts, " "))
		}
	}
	all := strings.Join(seen, "\n")
	for _, want := range []string{
		"AWS/SQS ApproximateNumberOfMessagesVisible QueueName " + name + "\n",
		"AWS/SQS ApproximateAgeOfOldestMessage QueueName " + name,
		"AWS/SQS ApproximateNumberOfMessagesVisible QueueName " + name + "-dlq",
		"ECS/ContainerInsights RunningTaskCount ClusterName " + name + " ServiceName worker",
		"BulkUserImport RowsSucceeded Service worker", "BulkUserImport RowsFailed Service worker", "BulkUserImport RowsRetried Service worker",
		`SEARCH('{BulkUserImport,Service,ErrorCode} MetricName="Errors"', 'Sum', 60)`,
		"BulkUserImport BreakersOpen Service worker",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("the dashboard lacks %q:\n%s", want, all)
		}
	}
}

func TestTerraformRefusesNamesAndSizesAWSWouldRefuse(t *testing.T) {
	dir := workspace(t)
	for _, tt := range []struct {
		s    scenario
		want string
	}{
		{scenario{env: "a-much-too-long-environment"}, "environment must be 1 to 18"},
		{scenario{env: "Prod"}, "environment must be 1 to 18"},
		{scenario{env: "test", extra: "worker_memory = 512\n"}, "worker_cpu 512 with worker_memory 512 is not a Fargate size"},
		{scenario{env: "test", extra: "cpu_architecture = \"ARM\"\n"}, "cpu_architecture must be X86_64 or ARM64"},
		{scenario{env: "test", extra: "cognito_budgets = { create = -5 }\n"}, "cognito_budgets: requests per second, 0 (none) or more"},
		{scenario{env: "test", prefix: ptr("/incoming/")}, "source_prefix must be empty or a key prefix ending in"},
		{scenario{env: "test", sourceBucket: "pfml-uploads", prefix: ptr("incoming")}, "source_prefix must be empty or a key prefix ending in"},
		{scenario{env: "test", sourceBucket: "pfml-uploads", prefix: ptr("in*/")}, "source_prefix must be empty or a key prefix ending in"},
		{scenario{env: "test", sourceBucket: "PFML_Uploads"}, "source_bucket_name must be an S3 bucket name"},
		{scenario{env: "test", emails: []string{"ops.example.com"}}, "completion_emails must hold e-mail addresses"},
		{scenario{env: "test", bus: "ops bus"}, "completion_event_bus must be an event bus's name or ARN"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			_, msg, err := plan(t, dir, tt.s)
			if err == nil || !strings.Contains(strings.Join(strings.Fields(msg), " "), tt.want) {
				t.Fatalf("plan: %v, want %q in:\n%s", err, tt.want, msg)
			}
		})
	}
}

// A deployment from before source_bucket_name has aws_s3_bucket.source in
// its state: the moved block carries it to aws_s3_bucket.source[0], with
// nothing destroyed.
func TestTheSourceBucketOfAnOlderStateIsMovedNotReplaced(t *testing.T) {
	dir := workspace(t)
	s := scenario{env: "test", trigger: true}
	name := "pfml-test-bulk-user-import"
	// The module's name for it: a hash of the account, region and name.
	bucket := name + "-source-" + fmt.Sprintf("%x", sha1.Sum([]byte(account+"/"+region+"/"+name)))[:8]
	tags := map[string]string{"environment": "test", "service": "bulk-user-import"}
	state := map[string]any{
		"version": 4, "terraform_version": "1.11.4", "serial": 1, "lineage": "6b1c0e52-8f0d-4c1e-9a37-2d0f5c7e1a01", "outputs": map[string]any{},
		"resources": []any{map[string]any{
			"module": "module.bulk_user_import", "mode": "managed", "type": "aws_s3_bucket", "name": "source",
			"provider": `provider["registry.terraform.io/hashicorp/aws"]`,
			"instances": []any{map[string]any{"schema_version": 0, "attributes": map[string]any{
				"id": bucket, "bucket": bucket, "arn": "arn:aws:s3:::" + bucket, "force_destroy": false, "tags": tags, "tags_all": tags,
			}}},
		}},
	}
	js, err := json.Marshal(state)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "old.tfstate")
	if err := os.WriteFile(path, js, 0o600); err != nil {
		t.Fatal(err)
	}
	// -state: deprecated, but it keeps the shared workspace's own state out of it.
	p, msg, err := plan(t, dir, s, "-state="+path)
	if err != nil {
		t.Fatalf("plan: %v\n%s", err, msg)
	}
	moved := false
	changes, _ := p["resource_changes"].([]any)
	for _, c := range changes {
		rc := c.(map[string]any)
		actions := list(rc["change"].(map[string]any)["actions"])
		if slices.Contains(actions, "delete") {
			t.Errorf("%s: %v", rc["address"], actions)
		}
		if rc["address"] == "module.bulk_user_import.aws_s3_bucket.source[0]" {
			moved = rc["previous_address"] == "module.bulk_user_import.aws_s3_bucket.source" && !slices.Contains(actions, "create")
			if !moved {
				t.Errorf("the source bucket in the old state: previous address %v, actions %v; want moved, not created", rc["previous_address"], actions)
			}
		}
	}
	if !moved {
		t.Error("the source bucket of the old state is not moved to aws_s3_bucket.source[0]")
	}
}
