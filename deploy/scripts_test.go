package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The scripts run with stub aws and terraform commands on PATH: the stub
// terraform prints an environment's outputs; the stub aws records its
// arguments and answers RunTask as told.

const stubOutputs = `{
  "cluster_name": {"value": "pfml-test-bulk-user-import"},
  "splitter_task_definition": {"value": "arn:aws:ecs:us-east-1:123456789012:task-definition/pfml-test-bulk-user-import-splitter"},
  "dlq_tools_task_definition": {"value": "arn:aws:ecs:us-east-1:123456789012:task-definition/pfml-test-bulk-user-import-dlq-tools"},
  "tasks_log_group": {"value": "/ecs/pfml-test-bulk-user-import/tasks"},
  "subnet_ids": {"value": ["subnet-0aaa", "subnet-0bbb"]},
  "security_group_ids": {"value": ["sg-0ccc"]},
  "assign_public_ip": {"value": false}
}`

const (
	started = `{"tasks": [{"taskArn": "arn:aws:ecs:us-east-1:123456789012:task/pfml-test-bulk-user-import/0123456789abcdef"}], "failures": []}`
	refused = `{"tasks": [], "failures": [{"arn": "arn:aws:ecs:us-east-1:123456789012:container-instance/x", "reason": "RESOURCE:MEMORY", "detail": "no capacity"}]}`
)

type scriptRun struct {
	code           int
	stdout, stderr string
	awsArgs        []string // one RunTask call's arguments
}

// runScript runs a script of deploy/ with the stubs; answer is what the
// stub aws prints for RunTask.
func runScript(t *testing.T, user, answer, script string, args ...string) scriptRun {
	t.Helper()
	for _, tool := range []string{"bash", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed: the script tests are skipped", tool)
		}
	}
	bin := t.TempDir()
	log := filepath.Join(bin, "aws.args")
	stubs := map[string]string{
		"terraform": "#!/bin/sh\ncat \"$STUB_OUTPUTS\"\n",
		"aws":       "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done > \"$STUB_LOG\"\ncat \"$STUB_ANSWER\"\n",
	}
	for name, body := range stubs {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{"outputs.json": stubOutputs, "answer.json": answer}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("./"+script, args...)
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "USER="+user,
		"STUB_LOG="+log, "STUB_OUTPUTS="+filepath.Join(bin, "outputs.json"), "STUB_ANSWER="+filepath.Join(bin, "answer.json"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := scriptRun{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(log); err == nil {
		r.awsArgs = strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	}
	return r
}

// flag returns the value after name in args.
func flag(t *testing.T, args []string, name string) string {
	t.Helper()
	i := slices.Index(args, name)
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("aws was called without %s: %q", name, args)
	}
	return args[i+1]
}

// command decodes the container command of a RunTask call's overrides.
func command(t *testing.T, args []string) (string, []string) {
	t.Helper()
	var o struct {
		ContainerOverrides []struct {
			Name    string
			Command []string
		}
	}
	if err := json.Unmarshal([]byte(flag(t, args, "--overrides")), &o); err != nil || len(o.ContainerOverrides) != 1 {
		t.Fatalf("overrides %q: %v", flag(t, args, "--overrides"), err)
	}
	return o.ContainerOverrides[0].Name, o.ContainerOverrides[0].Command
}

func TestRunTaskPassesEveryArgumentAsItIs(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		script    string
		args      []string
		container string
		taskdef   string
		command   []string
	}{
		{"run-task.sh", []string{"example", "dlq", "replay", "--error", "EMPLOYER_NOT_FOUND"}, "dlq-tools", "dlq-tools",
			[]string{"replay", "--error", "EMPLOYER_NOT_FOUND"}},
		{"run-import.sh", []string{"example", "s3://pfml-src/incoming/admins.csv", "--force-registration", "--max-failure-ratio", "0.2"}, "splitter", "splitter",
			[]string{"s3://pfml-src/incoming/admins.csv", "--force-registration", "--max-failure-ratio", "0.2"}},
		{"run-task.sh", []string{"example", "splitter", "cancel", "20261201-1", "--reason", "wrong file; it's the 2025 list", "--", "-x", ""}, "splitter", "splitter",
			[]string{"cancel", "20261201-1", "--reason", "wrong file; it's the 2025 list", "--", "-x", ""}},
		{"run-task.sh", []string{"example", "splitter", "--wait"}, "splitter", "splitter", []string{"--wait"}},
	} {
		r := runScript(t, "operator", started, tt.script, tt.args...)
		if r.code != 0 {
			t.Fatalf("%s %q: exit %d\n%s%s", tt.script, tt.args, r.code, r.stdout, r.stderr)
		}
		if r.awsArgs[0] != "ecs" || r.awsArgs[1] != "run-task" {
			t.Fatalf("aws %q", r.awsArgs)
		}
		if got := flag(t, r.awsArgs, "--task-definition"); !strings.HasSuffix(got, "pfml-test-bulk-user-import-"+tt.taskdef) {
			t.Errorf("task definition %s", got)
		}
		name, cmd := command(t, r.awsArgs)
		if name != tt.container || !slices.Equal(cmd, tt.command) {
			t.Errorf("%s %q: container %s command %q, want %s %q", tt.script, tt.args, name, cmd, tt.container, tt.command)
		}
		var network struct {
			AwsvpcConfiguration struct {
				Subnets        []string
				AssignPublicIP string `json:"assignPublicIp"`
			}
		}
		if err := json.Unmarshal([]byte(flag(t, r.awsArgs, "--network-configuration")), &network); err != nil ||
			len(network.AwsvpcConfiguration.Subnets) != 2 || network.AwsvpcConfiguration.AssignPublicIP != "DISABLED" {
			t.Errorf("network %+v, %v", network, err)
		}
		if !strings.Contains(r.stdout, "started arn:aws:ecs:us-east-1:123456789012:task/pfml-test-bulk-user-import/0123456789abcdef") ||
			!strings.Contains(r.stdout, "--log-stream-names "+tt.container+"/"+tt.container+"/0123456789abcdef") {
			t.Errorf("output:\n%s", r.stdout)
		}
	}
}

func TestRunTaskStartedByIsValidForAnyUserName(t *testing.T) {
	t.Parallel()
	for user, want := range map[string]string{
		"first.last":             "first-last",
		"o'brien@corp.example":   "o-brien-corp-example",
		"svc_ci/runner-1":        "svc_ci/runner-1",
		strings.Repeat("x", 200): strings.Repeat("x", 128),
		"":                       "operator",
		"dépôt":                  "d--p--t",
	} {
		r := runScript(t, user, started, "run-task.sh", "example", "dlq", "list")
		if r.code != 0 {
			t.Fatalf("user %q: exit %d %s", user, r.code, r.stderr)
		}
		if got := flag(t, r.awsArgs, "--started-by"); got != want {
			t.Errorf("user %q: started by %q, want %q", user, got, want)
		}
	}
}

func TestRunTaskFailsWhenTheTaskDoesNotStart(t *testing.T) {
	t.Parallel()
	r := runScript(t, "operator", refused, "run-task.sh", "example", "splitter", "status", "J")
	if r.code == 0 || !strings.Contains(r.stderr, "the task did not start") || !strings.Contains(r.stderr, "RESOURCE:MEMORY: no capacity") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout, "started") {
		t.Fatalf("said it started:\n%s", r.stdout)
	}
	r = runScript(t, "operator", started, "run-task.sh", "example")
	if r.code != 2 || len(r.awsArgs) != 0 {
		t.Fatalf("no tool: exit %d, aws %q", r.code, r.awsArgs)
	}
	r = runScript(t, "operator", started, "run-task.sh", "nowhere", "dlq", "list")
	if r.code != 2 || !strings.Contains(r.stderr, "no environment") {
		t.Fatalf("unknown environment: exit %d %s", r.code, r.stderr)
	}
}
