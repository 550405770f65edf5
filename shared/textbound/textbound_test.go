package textbound_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/massgov/bulk-user-import/shared/textbound"
)

// textCase is a string, a size, and what a function of the two returns.
type textCase struct {
	name string
	s    string
	n    int
	want string
}

// check runs fn, called name in messages, on each case.
func check(t *testing.T, name string, fn func(string, int) string, tests []textCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := fn(tt.s, tt.n); got != tt.want {
				t.Errorf("%s(%q, %d) = %q, want %q", name, tt.s, tt.n, got, tt.want)
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	check(t, "Truncate", textbound.Truncate, []textCase{
		{"empty", "", 5, ""},
		{"shorter than n is kept", "abc", 5, "abc"},
		{"exactly n is kept", "abcde", 5, "abcde"},
		{"longer than n is cut and marked", "abcdef", 5, "abcde…"},
		{"n of zero keeps nothing but the mark", "abc", 0, "…"},
		{"negative n counts as zero", "abc", -1, "…"},
		{"empty with negative n is kept", "", -1, ""},
		{"cut on a boundary between two-byte characters", "ééé", 4, "éé…"},
		{"cut inside a two-byte character backs up", "ééé", 3, "é…"},
		{"cut inside the first character keeps nothing", "ééé", 1, "…"},
		{"cut inside a three-byte character backs up", "a€b", 3, "a…"},
		{"cut after a three-byte character keeps it", "a€b", 4, "a€…"},
		{"cut inside a four-byte character backs up", "x😀y", 4, "x…"},
		{"cut after a four-byte character keeps it", "x😀y", 5, "x😀…"},
		{"white space is kept as is", "a\n b\tc", 4, "a\n b…"},
	})
}

func TestOneLine(t *testing.T) {
	t.Parallel()
	check(t, "OneLine", textbound.OneLine, []textCase{
		{"empty", "", 10, ""},
		{"only white space becomes empty", " \n\t ", 10, ""},
		{"runs of white space become one space", "a  b\n\nc\t\td", 20, "a b c d"},
		{"leading and trailing white space goes", "\n  a b  \r\n", 20, "a b"},
		{"unicode white space folds too", "a\u00a0\u2003b\u2028c", 20, "a b c"},
		{"folded before it is measured", "a\n\n\n\nb", 3, "a b"},
		{"longer than n is cut and marked", "one two  three", 7, "one two…"},
		{"cut inside a multi-byte character backs up", "prénom  nom", 3, "pr…"},
		{"cut after a multi-byte character keeps it", "prénom  nom", 4, "pré…"},
		{"cut inside a four-byte character backs up", "ok\n😀😀", 5, "ok …"},
		{"n of zero keeps nothing but the mark", "abc", 0, "…"},
	})
}

// Whatever the cut, valid text stays valid and the kept part is at most n
// bytes.
func TestTruncateKeepsValidTextValid(t *testing.T) {
	t.Parallel()
	s := strings.Repeat("aé€😀", 8)
	for n := 0; n <= len(s)+1; n++ {
		got := textbound.Truncate(s, n)
		if !utf8.ValidString(got) {
			t.Fatalf("Truncate(s, %d) = %q: not valid UTF-8", n, got)
		}
		kept := strings.TrimSuffix(got, textbound.Ellipsis)
		if len(kept) > n || !strings.HasPrefix(s, kept) {
			t.Fatalf("Truncate(s, %d) = %q: want a prefix of at most %d bytes", n, got, n)
		}
		if n < len(s) && (len(kept) < n-3 || got == kept) {
			t.Fatalf("Truncate(s, %d) = %q: cut more than a character short, or not marked", n, got)
		}
	}
}
