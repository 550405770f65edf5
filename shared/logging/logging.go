// Package logging builds the slog loggers of both binaries and masks the
// personal data that log lines may mention: emails and FEINs go through
// Email and FEIN, never straight into an attribute.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
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
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case JSON:
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case Text:
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want json or text", format)
	}
}

// Discard returns a logger that writes nothing (for tests and tools).
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// MaskEmail keeps the first character of the local part and the top-level
// domain: "jane.doe@example.com" becomes "j***@***.com".
func MaskEmail(email string) string {
	at := strings.LastIndexByte(email, '@')
	if at <= 0 {
		return "***"
	}
	local, domain := email[:at], email[at+1:]
	tld := ""
	if dot := strings.LastIndexByte(domain, '.'); dot >= 0 && len(domain)-dot <= 8 {
		tld = domain[dot:]
	}
	return firstRune(local) + "***@***" + tld
}

// MaskFEIN keeps the last four digits: "123456789" becomes "*****6789".
func MaskFEIN(fein string) string {
	if len(fein) <= 4 {
		return strings.Repeat("*", len(fein))
	}
	return strings.Repeat("*", len(fein)-4) + fein[len(fein)-4:]
}

func firstRune(s string) string {
	for _, r := range s {
		return string(r)
	}
	return ""
}

// Email is a log attribute holding a masked email.
func Email(email string) slog.Attr { return slog.String("email", MaskEmail(email)) }

// FEIN is a log attribute holding a masked FEIN.
func FEIN(fein string) slog.Attr { return slog.String("fein", MaskFEIN(fein)) }
