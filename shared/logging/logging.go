// Package logging builds the slog loggers of both binaries and masks the
// personal data that log lines may mention: emails and FEINs go through
// Email and FEIN, never straight into an attribute, and every message and
// string or error attribute is masked again on its way out (mask.Text).
package logging

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/massgov/bulk-user-import/shared/mask"
)

// Format selects the log encoding: JSON for production, text for a terminal.
type Format string

// Formats.
const (
	JSON Format = "json"
	Text Format = "text"
)

// New returns a logger writing to w in the given format at the given level
// ("debug", "info", "warn", "error").
func New(w io.Writer, format Format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl, ReplaceAttr: redact}
	switch format {
	case JSON:
		return slog.New(&uniqueKeys{next: slog.NewJSONHandler(w, opts)}), nil
	case Text:
		return slog.New(&uniqueKeys{next: slog.NewTextHandler(w, opts)}), nil
	default:
		return nil, fmt.Errorf("log format %q: want json or text", format)
	}
}

// Discard returns a logger that writes nothing (for tests and tools).
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// Email is a log attribute holding a masked email.
func Email(email string) slog.Attr { return slog.String("email", mask.Email(email)) }

// FEIN is a log attribute holding a masked FEIN.
func FEIN(fein string) slog.Attr { return slog.String("fein", mask.FEIN(fein)) }

// redact is the handlers' last line of defence: every message and string
// or error attribute goes through mask.Text, so that an email or FEIN that
// an error echoes (Cognito's validation messages, a FINEOS body) never
// reaches a log in clear.
func redact(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		if s := a.Value.String(); s != "" {
			if m := mask.Text(s); m != s {
				return slog.String(a.Key, m)
			}
		}
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok && err != nil {
			return slog.String(a.Key, mask.Text(err.Error()))
		}
	}
	return a
}
