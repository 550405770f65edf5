// Package mask keeps personal data out of everything the import prints
// or logs: emails and FEINs are masked the same way everywhere
// ("j***@***.com", "*****6789"), and free text (an error from Cognito or
// FINEOS, which may echo a request) has every email and FEIN in it masked.
// Only the result files and the database hold them in clear.
package mask

import (
	"regexp"
	"strings"

	"github.com/massgov/bulk-user-import/shared/csvrows"
)

// Email keeps the first character of the local part and the top-level
// domain: "jane.doe@example.com" becomes "j***@***.com".
func Email(email string) string {
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

// FEIN keeps the last four digits: "123456789" becomes "*****6789".
func FEIN(fein string) string {
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

var (
	// An address as the import accepts one (csvrows.NormalizeEmail), in
	// any case: the local part's characters are the normaliser's own.
	emailPattern = regexp.MustCompile(`[A-Za-z0-9.` + classOf(csvrows.LocalPartSpecials) + `]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*`)
	// A FEIN as written: nine digits, or two, a dash and seven, not part of
	// a longer number (an account id, a timestamp).
	feinPattern = regexp.MustCompile(`(^|[^0-9A-Za-z-])([0-9]{2}-?[0-9]{7})($|[^0-9A-Za-z-])`)
)

// classOf escapes chars for a regexp character class.
func classOf(chars string) string {
	var b strings.Builder
	for _, r := range chars {
		b.WriteByte('\\')
		b.WriteRune(r)
	}
	return b.String()
}

// Text masks every email and FEIN in free text.
func Text(s string) string {
	if strings.IndexByte(s, '@') >= 0 {
		s = emailPattern.ReplaceAllStringFunc(s, Email)
	}
	// Twice: adjacent matches share the character between them.
	for range 2 {
		s = feinPattern.ReplaceAllStringFunc(s, func(m string) string {
			sub := feinPattern.FindStringSubmatch(m)
			return sub[1] + FEIN(strings.ReplaceAll(sub[2], "-", "")) + sub[3]
		})
	}
	return s
}
