// Package textbound shapes text for display and bounded storage: it cuts a
// string to a size in bytes without splitting a character, and folds text
// onto one line, so that a long or hostile value (an error that echoes a
// request, a field of a CSV file) cannot blow up a report, a log line or a
// column.
package textbound

import "strings"

// Ellipsis marks text that was cut.
const Ellipsis = "…"

// Truncate returns s if it is at most n bytes long; otherwise its longest
// prefix of at most n bytes that ends on a character boundary, followed by
// Ellipsis. A negative n counts as 0.
func Truncate(s string, n int) string {
	n = max(n, 0)
	if len(s) <= n {
		return s
	}
	for n > 0 && !runeStart(s[n]) {
		n--
	}
	return s[:n] + Ellipsis
}

// OneLine folds s onto one line (each run of white space, line breaks
// included, becomes one space; leading and trailing space goes) and
// truncates it to at most n bytes as Truncate does.
func OneLine(s string, n int) string {
	return Truncate(strings.Join(strings.Fields(s), " "), n)
}

// runeStart reports whether b begins a UTF-8 sequence, that is, is not a
// continuation byte.
func runeStart(b byte) bool { return b&0xC0 != 0x80 }
