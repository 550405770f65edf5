// Package cli holds what the two command-line programs share: flags that
// may come before or after positional arguments, exit codes, logger set-up
// and signal handling.
package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/massgov/bulk-user-import/shared/logging"
	"github.com/massgov/bulk-user-import/shared/mask"
)

// Exit codes.
const (
	ExitOK       = 0
	ExitError    = 1 // the run failed or a source was refused
	ExitUsage    = 2 // bad flags or arguments
	ExitProblems = 3 // --wait: some rows failed or were rejected
)

// Parse parses args with fs, accepting flags anywhere among the positional
// arguments ("status JOB --json" as well as "--json status JOB"). After
// "--" everything is positional. It returns the positional arguments.
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		// Parse stopped at a positional argument or after "--" (which it
		// drops). An argument that looks like a flag can only be left
		// over because of "--": the rest is positional.
		if len(args[0]) > 1 && args[0][0] == '-' {
			return append(positional, args...), nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

// Logger builds the logger of a program. Format "auto" means text on a
// terminal and JSON otherwise (as under ECS).
func Logger(w *os.File, format, level string) (*slog.Logger, error) {
	if format == "auto" || format == "" {
		format = string(logging.JSON)
		if fi, err := w.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			format = string(logging.Text)
		}
	}
	return logging.New(w, logging.Format(format), level)
}

// SignalContext returns a context cancelled at the first SIGINT or SIGTERM,
// which log records (in the program's log format: a JSON log stays JSON).
// A second signal exits the process at once with status 130.
func SignalContext(log *slog.Logger) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		log.Info("received "+sig.String()+": stopping (send it again to exit at once)", "signal", sig.String())
		cancel()
		<-sigs
		log.Warn("second signal: exiting now")
		os.Exit(130)
	}()
	return ctx, func() {
		signal.Stop(sigs)
		cancel()
	}
}

// DurationVar defines a duration flag that also accepts whole days ("30d"),
// for settings counted in days such as retention.
func DurationVar(fs *flag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var((*duration)(p), name, usage)
}

type duration time.Duration

func (d *duration) String() string {
	if d == nil {
		return "0s"
	}
	v := time.Duration(*d)
	if v != 0 && v%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(v/(24*time.Hour)), 10) + "d"
	}
	return v.String()
}

func (d *duration) Set(s string) error {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 16)
		if err != nil {
			return fmt.Errorf("%q: want a duration such as 30d, 12h or 90m", s)
		}
		*d = duration(time.Duration(n) * 24 * time.Hour)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q: want a duration such as 30d, 12h or 90m", s)
	}
	*d = duration(v)
	return nil
}

// PrintError prints err on w after prog ("splitter: …"), with any email or
// FEIN the error mentions masked: an error can quote a row.
func PrintError(w io.Writer, prog string, err error) {
	fmt.Fprintf(w, "%s: %s\n", prog, mask.Text(err.Error()))
}
