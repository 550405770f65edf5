// Package proctest runs the real splitter and worker binaries in tests:
// it builds them once, gives them the environment of a test stack, and
// starts, signals and waits for them.
package proctest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Module is the import path prefix of the binaries.
const Module = "github.com/massgov/bulk-user-import/"

// Build compiles the named main packages ("splitter", "worker") into a new
// directory and returns it; call it from TestMain, and remove the
// directory afterwards.
func Build(pkgs ...string) (string, error) {
	dir, err := os.MkdirTemp("", "bui-bin-")
	if err != nil {
		return "", err
	}
	for _, pkg := range pkgs {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, pkg), Module+pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("build %s: %w", pkg, err)
		}
	}
	return dir, nil
}

// Main is a TestMain that builds the named main packages, sets *dir to
// their directory, runs the tests and removes the directory; it returns
// the exit code.
func Main(m *testing.M, dir *string, pkgs ...string) int {
	d, err := Build(pkgs...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(d)
	*dir = d
	return m.Run()
}

// Env returns the test process's environment with vars set on top; any
// variable the binaries read that vars does not set is removed, so that
// the developer's own settings cannot leak into a test.
func Env(vars map[string]string, extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := vars[k]; ok || strings.HasPrefix(k, "FINEOS_") || strings.HasPrefix(k, "DB_") ||
			strings.HasPrefix(k, "AWS_ENDPOINT_URL") || k == "COGNITO_IDENTITY_POOL_ID" || k == "DATABASE_URL" ||
			k == "PROCESS_CSV_DATA_BUCKET_NAME" || k == "LOG_FORMAT" || k == "LOG_LEVEL" {
			continue
		}
		out = append(out, kv)
	}
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	return append(out, extra...)
}

// Result of a finished command.
type Result struct {
	Code           int
	Stdout, Stderr string
}

// Run runs a binary to its end (two minutes at most).
func Run(tb testing.TB, bin string, env []string, args ...string) Result {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.Code = ee.ExitCode()
	} else if err != nil {
		tb.Fatalf("%s: %v", filepath.Base(bin), err)
	}
	return r
}

// Proc is a running process.
type Proc struct {
	cmd  *exec.Cmd
	out  *Buffer
	done chan struct{}
	err  error
}

// Start starts bin in the background; its output is kept in Output.
func Start(bin string, env []string, args ...string) (*Proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	p := &Proc{cmd: cmd, out: &Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Output is what the process wrote so far (stdout and stderr).
func (p *Proc) Output() string { return p.out.String() }

// PID of the process.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Wait waits up to timeout for the process to end and returns its exit
// error; exited is false if it is still running.
func (p *Proc) Wait(timeout time.Duration) (exited bool, err error) {
	select {
	case <-p.done:
		return true, p.err
	case <-time.After(timeout):
		return false, nil
	}
}

// Kill sends SIGKILL and waits for the end.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and waits up to timeout for the process to exit,
// then kills it. It returns how long the process took and its exit error;
// stopped is false when it had to be killed.
func (p *Proc) Stop(timeout time.Duration) (took time.Duration, stopped bool, err error) {
	if p.Exited() {
		return 0, true, p.err
	}
	start := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return time.Since(start), true, p.err
	case <-time.After(timeout):
		p.Kill()
		return time.Since(start), false, p.err
	}
}

// Buffer is a bytes.Buffer safe for a process to write while a test reads.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
