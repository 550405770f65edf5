// Package deploy checks the deployment against the code: the Terraform
// module grants each task role exactly the AWS actions its binary calls,
// no action is a wildcard, the queue's and the worker's timeouts agree, the
// worker's flags exist, the files are formatted, and the image is built
// the way the README says.
package deploy

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/types"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
	"golang.org/x/tools/go/packages"

	"github.com/massgov/bulk-user-import/localstack/proctest"
	"github.com/massgov/bulk-user-import/shared/consume"
	"github.com/massgov/bulk-user-import/shared/queue"
)

const moduleDir = "terraform/modules/bulk-user-import"

// grant is one (IAM action, resource) pair; resource is the expression's
// source text, such as aws_sqs_queue.import.arn.
type grant struct{ action, resource string }

func (g grant) String() string { return g.action + " on " + g.resource }

var (
	importQueue = "local.import_queue_arn"
	dlq         = "local.dlq_arn"
	pool        = "var.cognito_user_pool_arn"
	results     = `"${local.results_bucket_arn}/*"`
	sources     = `"${local.source_bucket_arn}/${local.source_read_prefix}*"`
	sourceList  = "local.source_bucket_arn"
	completions = "local.completion_topic_arn"
	eventBus    = "local.completion_event_bus_arn"
	workerTasks = `"arn:${local.partition}:ecs:${local.region}:${local.account_id}:task/${var.name}/*"`
)

// roles lists, per task role, the grants its binary needs: the SDK calls
// of the packages it runs (checked against the code below), on the
// resources it calls them on.
var roles = map[string][]grant{
	// worker (the service): shared/consume, shared/queue, shared/cognito, shared/maintain (lifecycle, results, enqueue), shared/ecsprotect
	"worker": {
		{"sqs:ReceiveMessage", importQueue},          // queue.Receive
		{"sqs:DeleteMessage", importQueue},           // queue.DeleteBatch
		{"sqs:ChangeMessageVisibility", importQueue}, // queue.ChangeVisibility(Batch): retries, heartbeat, release
		{"sqs:GetQueueAttributes", importQueue},      // queue.Redrive at start; queue.Depth, the maintainer's rescuer
		{"sqs:SendMessage", importQueue},             // queue.Send: release near the last attempt
		{"sqs:SendMessage", dlq},                     // queue.Send: dead letters
		{"sqs:GetQueueAttributes", dlq},              // queue.Retention at start, for the rescuer
		{"cognito-idp:AdminGetUser", pool},
		{"cognito-idp:AdminCreateUser", pool},
		{"cognito-idp:AdminSetUserPassword", pool},
		{"cognito-idp:DescribeUserPool", pool},    // the start-up check
		{"s3:PutObject", results},                 // results.Publisher
		{"ecs:UpdateTaskProtection", workerTasks}, // ecsprotect, through the ECS agent
		{"sns:Publish", completions},              // completion events (maintainer)
		{"events:PutEvents", eventBus},            // completion events, with completion_event_bus
	},
	// splitter: shared/split, shared/source, shared/results
	"splitter": {
		{"s3:GetObject", sources},        // source.Opener
		{"s3:ListBucket", sourceList},    // not called: a GetObject of a missing key then reads 404, not 403
		{"sqs:SendMessage", importQueue}, // queue.SendBatch
		{"s3:PutObject", results},        // results.Publisher (jobs complete once recorded, cancel); splitter resend sends with SendMessage
	},
	// worker dlq ...: shared/dlq, shared/results
	"dlq_tools": {
		{"sqs:ReceiveMessage", dlq},
		{"sqs:DeleteMessage", dlq},
		{"sqs:ChangeMessageVisibility", dlq},
		{"sqs:SendMessage", importQueue}, // replay
		{"s3:PutObject", results},        // results.Publisher after a purge
	},
}

// sdkAction maps an SDK operation, as called in the code, to its IAM action.
func sdkAction(service, op string) string {
	prefix := map[string]string{"sqs": "sqs", "s3": "s3", "cognitoidentityprovider": "cognito-idp", "sns": "sns", "eventbridge": "events"}[service]
	op = strings.TrimSuffix(op, "Batch") // SendMessageBatch needs sqs:SendMessage, and so on
	return prefix + ":" + op
}

// sdkCalls finds every AWS SDK operation called by the production code
// (the packages the splitter and worker binaries import): calls of a method
// whose input is a *<Op>Input of an SDK service package, whether on the
// SDK client or on one of our narrow interfaces.
func sdkCalls(t *testing.T) map[string][]string {
	t.Helper()
	cfg := &packages.Config{Mode: packages.NeedName | packages.NeedTypes | packages.NeedSyntax | packages.NeedTypesInfo | packages.NeedDeps | packages.NeedImports, Dir: ".."}
	pkgs, err := packages.Load(cfg, "./splitter", "./worker")
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string][]string{} // IAM action -> where
	seen := map[string]bool{}
	var visit func(p *packages.Package)
	visit = func(p *packages.Package) {
		if seen[p.PkgPath] || !strings.HasPrefix(p.PkgPath, "github.com/massgov/bulk-user-import/") {
			return
		}
		seen[p.PkgPath] = true
		for _, imp := range p.Imports {
			visit(imp)
		}
		for _, f := range p.Syntax {
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || len(call.Args) < 2 {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				ptr, ok := p.TypesInfo.TypeOf(call.Args[1]).(*types.Pointer)
				if !ok {
					return true
				}
				named, ok := ptr.Elem().(*types.Named)
				if !ok || named.Obj().Pkg() == nil {
					return true
				}
				path := named.Obj().Pkg().Path()
				const svc = "github.com/aws/aws-sdk-go-v2/service/"
				if !strings.HasPrefix(path, svc) || named.Obj().Name() != sel.Sel.Name+"Input" {
					return true
				}
				action := sdkAction(strings.TrimPrefix(path, svc), sel.Sel.Name)
				pos := p.Fset.Position(call.Pos())
				calls[action] = append(calls[action], fmt.Sprintf("%s:%d", filepath.Base(pos.Filename), pos.Line))
				return true
			})
		}
	}
	for _, p := range pkgs {
		if len(p.Errors) > 0 {
			t.Fatalf("load %s: %v", p.PkgPath, p.Errors)
		}
		visit(p)
	}
	return calls
}

func TestEveryAWSCallIsGrantedAndNothingMore(t *testing.T) {
	t.Parallel()
	calls := sdkCalls(t)
	for action, where := range calls {
		t.Logf("%s: %s", action, strings.Join(where, ", "))
	}
	if len(calls) < 8 {
		t.Fatalf("found only %d SDK operations in the code: the scan is broken: %v", len(calls), calls)
	}
	// Every call of the code is in the table, for some role.
	needed := map[string]bool{}
	for _, gs := range roles {
		for _, g := range gs {
			needed[g.action] = true
		}
	}
	for action, where := range calls {
		if !needed[action] {
			t.Errorf("the code calls %s (%s) but no task role is granted it: add it to deploy/terraform and to this test's table", action, strings.Join(where, ", "))
		}
	}
	// Every SDK action of the table is called by the code, but for the
	// grants that are no SDK call of ours.
	notCalled := map[string]string{
		"ecs:UpdateTaskProtection": "goes through the ECS agent",
		"s3:ListBucket":            "makes S3 answer a GetObject of a missing key with 404, not 403",
	}
	for action := range needed {
		if _, ok := calls[action]; !ok && notCalled[action] == "" {
			t.Errorf("the table grants %s, which the code no longer calls", action)
		}
	}
	// Each role's policy grants exactly its table entries.
	docs := policyDocuments(t)
	for role, want := range roles {
		doc, ok := docs[role]
		if !ok {
			t.Errorf("no aws_iam_policy_document %q", role)
			continue
		}
		got := doc.allows()
		sort.Slice(want, func(i, j int) bool { return want[i].String() < want[j].String() })
		if !slices.Equal(got, want) {
			t.Errorf("role %s grants:\n  %v\nits binary needs:\n  %v", role, got, want)
		}
	}
}

func TestNoWildcardActionIsAllowed(t *testing.T) {
	t.Parallel()
	for name, doc := range policyDocuments(t) {
		for _, g := range doc.allows() {
			if strings.Contains(g.action, "*") {
				t.Errorf("policy %s allows the wildcard action %s", name, g)
			}
		}
	}
}

func TestTimeoutsAndAttemptsAgreeWithTheWorker(t *testing.T) {
	t.Parallel()
	vars := variableDefaults(t)
	if got := vars["visibility_timeout_seconds"]; got != consume.DefaultVisibilityTimeout.Seconds() {
		t.Errorf("visibility_timeout_seconds defaults to %v, the worker's --visibility-timeout to %s", got, consume.DefaultVisibilityTimeout)
	}
	if got := vars["max_receive_count"]; got != queue.DefaultMaxReceiveCount {
		t.Errorf("max_receive_count defaults to %v, the worker and bootstrap assume %d", got, queue.DefaultMaxReceiveCount)
	}
	shutdown, stop := vars["worker_shutdown_timeout_seconds"], vars["worker_stop_timeout_seconds"]
	if shutdown != consume.DefaultShutdownTimeout.Seconds() {
		t.Errorf("worker_shutdown_timeout_seconds defaults to %v, the worker's --shutdown-timeout to %s", shutdown, consume.DefaultShutdownTimeout)
	}
	if stop < shutdown+5 || stop > 120 || time.Duration(shutdown)*time.Second >= 30*time.Second {
		t.Errorf("stop timeout %vs must exceed the shutdown timeout %vs by 5 s, be at most 120 s, and the shutdown stay under 30 s", stop, shutdown)
	}

	src := moduleSource(t)
	for _, want := range []string{
		`visibility_timeout_seconds = var.visibility_timeout_seconds`,
		`maxReceiveCount     = var.max_receive_count`,
		`message_retention_seconds = 1209600`,
		`stopTimeout = var.worker_stop_timeout_seconds`,
		`"--visibility-timeout", "${var.visibility_timeout_seconds}s"`,
		`"--shutdown-timeout", "${var.worker_shutdown_timeout_seconds}s"`,
		`sqs_managed_sse_enabled    = true`,
		`redrivePermission = "byQueue"`,
		`sse_algorithm = "AES256"`,
		`restrict_public_buckets = true`,
		`variable = "aws:SecureTransport"`,
		`RunningTaskCount`,
		`ApproximateNumberOfMessagesVisible`,
		`min_capacity       = var.worker_min_count`,
	} {
		if !strings.Contains(src, want) {
			t.Errorf("the module does not contain %q", want)
		}
	}
}

func TestTheWorkerCommandUsesRealFlags(t *testing.T) {
	t.Parallel()
	dir, err := proctest.Build("worker")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	out, _ := exec.Command(filepath.Join(dir, "worker"), "-h").CombinedOutput()
	help := string(out)
	command := regexp.MustCompile(`(?s)worker_command = concat\(\[(.*?)\n  \]\)\)`).FindStringSubmatch(moduleSource(t))
	if command == nil {
		t.Fatal("no worker_command in the module")
	}
	flags := regexp.MustCompile(`"(--[a-z-]+)"`).FindAllStringSubmatch(command[1], -1)
	if len(flags) < 5 {
		t.Fatalf("found %d flags in the module", len(flags))
	}
	for _, f := range flags {
		if !strings.Contains(help, "  -"+strings.TrimPrefix(f[1], "--")+" ") && !strings.Contains(help, "  -"+strings.TrimPrefix(f[1], "--")+"\n") {
			t.Errorf("the module passes %s, which the worker does not know", f[1])
		}
	}
}

func TestTerraformIsFormatted(t *testing.T) {
	t.Parallel()
	for _, path := range tfFiles(t) {
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if formatted := hclwrite.Format(src); !bytes.Equal(formatted, src) {
			t.Errorf("%s is not formatted (terraform fmt)", path)
		}
	}
	if _, err := exec.LookPath("terraform"); err == nil {
		if out, err := exec.Command("terraform", "fmt", "-check", "-recursive", "terraform").CombinedOutput(); err != nil {
			t.Errorf("terraform fmt -check: %v\n%s", err, out)
		}
	}
}

func TestDockerfileBuildsStaticBinariesForANonRootImage(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	d := string(b)
	if strings.Count(d, "\nFROM ") < 2 {
		t.Error("the Dockerfile is not multi-stage")
	}
	for _, want := range []string{"CGO_ENABLED=0", "./splitter", "./worker", "distroless/static", "USER nonroot",
		"--chown=nonroot:nonroot /out/scratch /scratch", `VOLUME ["/scratch"]`, "ENV TMPDIR=/scratch",
		// Built on the builder's platform for the target's, from the Go of go.mod's toolchain.
		"FROM --platform=$BUILDPLATFORM golang:1.26.8-", "GOOS=$TARGETOS GOARCH=$TARGETARCH go build"} {
		if !strings.Contains(d, want) {
			t.Errorf("the Dockerfile lacks %q", want)
		}
	}
	// Its ignore file keeps everything but the Go module out of the context.
	ignore, err := os.ReadFile("Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\n*\n", "!go.mod", "!go.sum", "!shared/", "!splitter/", "!worker/"} {
		if !strings.Contains("\n"+string(ignore), want) {
			t.Errorf("Dockerfile.dockerignore lacks %q", want)
		}
	}
	// The Go image is the version this repository builds with.
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(gomod), "\ngo 1.26") {
		t.Errorf("go.mod's go line is not 1.26: the Dockerfile's golang:1.26.8 must follow it")
	}
	// The task definitions mount their writable volume where the image's TMPDIR is.
	if !strings.Contains(moduleSource(t), `containerPath = "/scratch"`) {
		t.Error("the task definitions do not mount the scratch volume at /scratch")
	}
}

// --- Terraform parsing.

func tfFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir("terraform", func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".tf") {
			files = append(files, path)
		}
		return err
	})
	if err != nil || len(files) == 0 {
		t.Fatalf("no Terraform files: %v", err)
	}
	return files
}

func moduleSource(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	paths, _ := filepath.Glob(filepath.Join(moduleDir, "*.tf"))
	for _, p := range paths {
		src, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(src)
	}
	return b.String()
}

type parsed struct {
	body *hclsyntax.Body
	src  []byte
}

// parseModule parses every file of the module, failing on syntax errors.
func parseModule(t *testing.T) []parsed {
	t.Helper()
	p := hclparse.NewParser()
	paths, _ := filepath.Glob(filepath.Join(moduleDir, "*.tf"))
	var out []parsed
	for _, path := range paths {
		f, diags := p.ParseHCLFile(path)
		if diags.HasErrors() {
			t.Fatalf("%s: %v", path, diags)
		}
		out = append(out, parsed{body: f.Body.(*hclsyntax.Body), src: f.Bytes})
	}
	return out
}

// policy is an aws_iam_policy_document's statements.
type policy struct{ statements []statement }

type statement struct {
	effect    string
	actions   []string
	resources []string
}

// allows returns the (action, resource) pairs the policy allows, sorted.
func (p policy) allows() []grant {
	var out []grant
	for _, s := range p.statements {
		if s.effect != "Allow" {
			continue
		}
		for _, a := range s.actions {
			for _, r := range s.resources {
				out = append(out, grant{a, r})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

func policyDocuments(t *testing.T) map[string]policy {
	t.Helper()
	docs := map[string]policy{}
	for _, f := range parseModule(t) {
		for _, b := range f.body.Blocks {
			if b.Type != "data" || len(b.Labels) != 2 || b.Labels[0] != "aws_iam_policy_document" {
				continue
			}
			var p policy
			for _, sb := range b.Body.Blocks {
				body := sb.Body
				if sb.Type == "dynamic" && len(sb.Labels) == 1 && sb.Labels[0] == "statement" {
					for _, c := range sb.Body.Blocks {
						if c.Type == "content" {
							body = c.Body
						}
					}
				} else if sb.Type != "statement" {
					continue
				}
				p.statements = append(p.statements, readStatement(t, body, f.src))
			}
			docs[b.Labels[1]] = p
		}
	}
	return docs
}

func readStatement(t *testing.T, body *hclsyntax.Body, src []byte) statement {
	t.Helper()
	s := statement{effect: "Allow"}
	if a, ok := body.Attributes["effect"]; ok {
		v, diags := a.Expr.Value(nil)
		if diags.HasErrors() {
			t.Fatalf("effect: %v", diags)
		}
		s.effect = v.AsString()
	}
	if a, ok := body.Attributes["actions"]; ok {
		v, diags := a.Expr.Value(nil)
		if diags.HasErrors() {
			t.Fatalf("actions must be literal strings: %v", diags)
		}
		for _, e := range v.AsValueSlice() {
			s.actions = append(s.actions, e.AsString())
		}
	}
	if a, ok := body.Attributes["resources"]; ok {
		tuple, ok := a.Expr.(*hclsyntax.TupleConsExpr)
		if !ok {
			// A computed list (local.secretsmanager_arns): its source text.
			s.resources = []string{string(a.Expr.Range().SliceBytes(src))}
		} else {
			for _, e := range tuple.Exprs {
				s.resources = append(s.resources, strings.TrimSpace(string(e.Range().SliceBytes(src))))
			}
		}
	}
	return s
}

// variableDefaults returns the numeric defaults of the module's variables.
func variableDefaults(t *testing.T) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, f := range parseModule(t) {
		for _, b := range f.body.Blocks {
			if b.Type != "variable" || len(b.Labels) != 1 {
				continue
			}
			a, ok := b.Body.Attributes["default"]
			if !ok {
				continue
			}
			v, diags := a.Expr.Value(&hcl.EvalContext{})
			if diags.HasErrors() || v.IsNull() || !v.Type().Equals(cty.Number) {
				continue
			}
			out[b.Labels[0]], _ = v.AsBigFloat().Float64()
		}
	}
	return out
}
