package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/localstack/devdb"
)

// Server is a private PostgreSQL server for one test: chaos tests restart
// it without disturbing the tests that share the machine's server. It is
// built with the installed initdb and pg_ctl (found with pg_config, in
// PATH, or under /usr/lib/postgresql); when the test runs as root the
// server runs as the postgres user, since PostgreSQL refuses root.
type Server struct {
	URL      string // postgres://postgres@127.0.0.1:PORT/postgres
	bin      string
	dir      string
	port     int
	as       []string // command prefix to run as the server's user
	settings []string
}

// StartServer initialises and starts a server, stopped at the end of the
// test. Settings ("name=value") are passed to the server (-c).
func StartServer(tb testing.TB, settings ...string) *Server {
	tb.Helper()
	s, err := Start(settings...)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// Start initialises and starts a server outside a test (a benchmark's);
// Stop stops it and removes its files.
func Start(settings ...string) (_ *Server, err error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, settings: settings}
	if s.dir, err = os.MkdirTemp("", "bui-pg-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(s.dir)
		}
	}()
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs a postgres user to run the server: %w", err)
		}
		s.as = []string{"runuser", "-u", "postgres", "--"}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(s.dir, uid, gid); err != nil {
			return nil, err
		}
	}
	if out, err := s.run("initdb", "-D", s.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	if s.port, err = freePort(); err != nil {
		return nil, err
	}
	s.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres", s.port)
	if out, err := s.ctl("start"); err != nil {
		return nil, fmt.Errorf("start: %v\n%s", err, out)
	}
	return s, nil
}

// Stop stops the server at once and removes its files.
func (s *Server) Stop() {
	_, _ = s.run("pg_ctl", "-D", s.data(), "-m", "immediate", "-w", "stop")
	os.RemoveAll(s.dir)
}

// Restart stops the server (closing every connection, as an operator's
// restart does) and starts it again, waiting until it accepts connections.
func (s *Server) Restart() error {
	if out, err := s.run("pg_ctl", "-D", s.data(), "-m", "fast", "-w", "stop"); err != nil {
		return fmt.Errorf("stop: %v: %s", err, out)
	}
	if out, err := s.ctl("start"); err != nil {
		return fmt.Errorf("start: %v: %s", err, out)
	}
	return nil
}

// Database creates a database on the server and returns its URL.
func (s *Server) Database(tb testing.TB, name string) string {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.URL)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatalf("pgtest: create database: %v", err)
	}
	return devdb.WithDatabase(s.URL, name)
}

// PFMLDatabase creates a database on the server holding the PFML dev
// schema and the tool's tables (as NewPFMLDatabase does on the shared
// server) and returns its URL and a pool on it, closed at the end.
func (s *Server) PFMLDatabase(tb testing.TB, name string) (string, *pgxpool.Pool) {
	tb.Helper()
	url := s.Database(tb, name)
	return url, preparePFML(tb, url)
}

// Log returns what the server has logged so far.
func (s *Server) Log() ([]byte, error) {
	return os.ReadFile(filepath.Join(s.dir, "server.log"))
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

func (s *Server) ctl(action string) ([]byte, error) {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200", s.port, s.dir)
	for _, kv := range s.settings {
		opts += " -c " + kv
	}
	return s.run("pg_ctl", "-D", s.data(), "-o", opts, "-l", filepath.Join(s.dir, "server.log"), "-w", "-t", "60", action)
}

func (s *Server) run(tool string, args ...string) ([]byte, error) {
	argv := append(append(append([]string{}, s.as...), filepath.Join(s.bin, tool)), args...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = s.dir
	return cmd.CombinedOutput()
}

// binDir finds the directory of initdb and pg_ctl.
func binDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); fileExists(filepath.Join(dir, "initdb")) {
			return dir, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Strings(dirs)
	for i := len(dirs) - 1; i >= 0; i-- {
		if fileExists(filepath.Join(dirs[i], "initdb")) {
			return dirs[i], nil
		}
	}
	return "", fmt.Errorf("no initdb found (install the PostgreSQL server package, or put its bin directory in PATH)")
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
