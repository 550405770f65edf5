package devdb

import "testing"

func TestWithDatabase(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"postgres://u@h:5432/old", "postgres://u@h:5432/new"},
		{"postgres://u@h:5432/old?sslmode=disable", "postgres://u@h:5432/new?sslmode=disable"},
		{"postgresql://u@h", "postgresql://u@h/new"},
		{"host=h user=u", "host=h user=u dbname=new"},
	} {
		if got := WithDatabase(c.in, "new"); got != c.want {
			t.Errorf("WithDatabase(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
