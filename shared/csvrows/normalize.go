package csvrows

import (
	"errors"
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
	// Errors name the problem, never the value: they are printed and
	// logged, and a FEIN is personal data.
	if cleaned == "" {
		return "", errors.New("is empty")
	}
	for _, r := range cleaned {
		if r < '0' || r > '9' {
			return "", errors.New("must contain only digits, dashes and spaces")
		}
	}
	if len(cleaned) > 9 {
		return "", fmt.Errorf("has %d digits, more than 9", len(cleaned))
	}
	return strings.Repeat("0", 9-len(cleaned)) + cleaned, nil
}

// NormalizeEmail trims and lower-cases an address and checks its syntax:
// one @, a dot-atom local part of at most 64 characters and a domain of
// letters, digits and hyphens with at least two labels.
func NormalizeEmail(raw string) (string, error) {
	// Errors name the problem, never the value (see NormalizeFEIN).
	email := strings.ToLower(strings.TrimSpace(raw))
	if email == "" {
		return "", errors.New("is empty")
	}
	if len(email) > MaxEmailLength {
		return "", fmt.Errorf("is longer than %d characters", MaxEmailLength)
	}
	at := strings.LastIndexByte(email, '@')
	if n := strings.Count(email, "@"); n != 1 {
		return "", fmt.Errorf("must contain exactly one @ (it has %d)", n)
	}
	local, domain := email[:at], email[at+1:]
	if err := checkLocalPart(local); err != nil {
		return "", err
	}
	if err := checkDomain(domain); err != nil {
		return "", err
	}
	return email, nil
}

func checkLocalPart(local string) error {
	if local == "" {
		return errors.New("nothing before the @")
	}
	if len(local) > 64 {
		return errors.New("the part before the @ is longer than 64 characters")
	}
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return errors.New("misplaced dot before the @")
	}
	for _, r := range local {
		if !isAtext(r) && r != '.' {
			return fmt.Errorf("character %q is not allowed before the @", r)
		}
	}
	return nil
}

// LocalPartSpecials are the characters, besides letters, digits and dots,
// that the part of an address before the @ may hold (RFC 5322's atext).
// Whatever recognises addresses in text (the masking of logs) uses the
// same set, so that no address the import accepts escapes it.
const LocalPartSpecials = "!#$%&'*+/=?^_`{|}~-"

func isAtext(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	}
	return strings.ContainsRune(LocalPartSpecials, r)
}

func checkDomain(domain string) error {
	if domain == "" {
		return errors.New("nothing after the @")
	}
	labels := strings.Split(domain, ".")
	if len(labels) < 2 {
		return errors.New("the domain (after the @) has no dot")
	}
	for _, label := range labels {
		if label == "" || len(label) > 63 {
			return errors.New("the domain has an empty part or one longer than 63 characters")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("a part of the domain starts or ends with a hyphen")
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("character %q is not allowed in the domain", r)
			}
		}
	}
	tld := labels[len(labels)-1]
	if len(tld) < 2 || strings.Trim(tld, "0123456789") == "" {
		return errors.New("the domain does not end in a valid top-level domain")
	}
	return nil
}
