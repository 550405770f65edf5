package csvrows

import (
	"fmt"
	"strings"
	"unicode"
)

// Reject codes name why a row was not accepted. They appear in status output
// and reports, so they are part of the tool's interface.
const (
	CodeInvalidFEIN  = "INVALID_FEIN"
	CodeInvalidEmail = "INVALID_EMAIL"
	CodeFieldCount   = "FIELD_COUNT"
	CodeParseError   = "PARSE_ERROR"
	CodeFieldTooLong = "FIELD_TOO_LONG"
	CodeInvalidUTF8  = "INVALID_UTF8"
)

// MaxEmailLength is the longest address accepted (RFC 5321 path limit).
const MaxEmailLength = 254

// NormalizeFEIN removes dashes and spaces, left-pads with zeros to nine
// characters and checks that the result is exactly nine digits.
func NormalizeFEIN(raw string) (string, error) {
	cleaned := strings.Map(func(r rune) rune {
		if r == '-' || unicode.IsSpace(r) {
			return -1
		}
		return r
	}, raw)
	if cleaned == "" {
		return "", fmt.Errorf("fein is empty")
	}
	if len(cleaned) > 9 {
		return "", fmt.Errorf("fein %q has more than 9 digits", truncate(raw, 32))
	}
	for _, r := range cleaned {
		if r < '0' || r > '9' {
			return "", fmt.Errorf("fein %q must contain only digits, dashes and spaces", truncate(raw, 32))
		}
	}
	return strings.Repeat("0", 9-len(cleaned)) + cleaned, nil
}

// NormalizeEmail trims and lower-cases an address and checks its syntax:
// one @, a dot-atom local part of at most 64 characters and a domain of
// letters, digits and hyphens with at least two labels.
func NormalizeEmail(raw string) (string, error) {
	email := strings.ToLower(strings.TrimSpace(raw))
	if email == "" {
		return "", fmt.Errorf("email is empty")
	}
	if len(email) > MaxEmailLength {
		return "", fmt.Errorf("email is longer than %d characters", MaxEmailLength)
	}
	at := strings.LastIndexByte(email, '@')
	if at < 0 || strings.IndexByte(email, '@') != at {
		return "", fmt.Errorf("email %q must contain exactly one @", truncate(raw, 64))
	}
	local, domain := email[:at], email[at+1:]
	if err := checkLocalPart(local); err != nil {
		return "", fmt.Errorf("email %q: %w", truncate(raw, 64), err)
	}
	if err := checkDomain(domain); err != nil {
		return "", fmt.Errorf("email %q: %w", truncate(raw, 64), err)
	}
	return email, nil
}

func checkLocalPart(local string) error {
	if local == "" {
		return fmt.Errorf("nothing before the @")
	}
	if len(local) > 64 {
		return fmt.Errorf("the part before the @ is longer than 64 characters")
	}
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return fmt.Errorf("misplaced dot before the @")
	}
	for _, r := range local {
		if !isAtext(r) && r != '.' {
			return fmt.Errorf("character %q is not allowed before the @", r)
		}
	}
	return nil
}

func isAtext(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	}
	return strings.ContainsRune("!#$%&'*+/=?^_`{|}~-", r)
}

func checkDomain(domain string) error {
	if domain == "" {
		return fmt.Errorf("nothing after the @")
	}
	labels := strings.Split(domain, ".")
	if len(labels) < 2 {
		return fmt.Errorf("domain %q has no dot", domain)
	}
	for _, label := range labels {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("domain %q has an empty or too long label", domain)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("domain label %q starts or ends with a hyphen", label)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("character %q is not allowed in the domain", r)
			}
		}
	}
	tld := labels[len(labels)-1]
	if len(tld) < 2 || strings.Trim(tld, "0123456789") == "" {
		return fmt.Errorf("domain %q does not end in a valid top-level domain", domain)
	}
	return nil
}

// truncate shortens s to at most n bytes for error messages, on a rune
// boundary, so that a hostile field cannot blow up a report or a log line.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
