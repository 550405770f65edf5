package cli

import (
	"flag"
	"io"
	"slices"
	"testing"
)

func TestParseAcceptsFlagsAnywhere(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		pos  []string
		json bool
		job  string
	}{
		{[]string{"status", "J1", "--json"}, []string{"status", "J1"}, true, ""},
		{[]string{"--json", "status", "J1"}, []string{"status", "J1"}, true, ""},
		{[]string{"a.csv", "--job", "x", "b.csv"}, []string{"a.csv", "b.csv"}, false, "x"},
		{[]string{"a.csv", "--", "--json", "-"}, []string{"a.csv", "--json", "-"}, false, ""},
		{[]string{"-"}, []string{"-"}, false, ""},
		{nil, nil, false, ""},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		j := fs.Bool("json", false, "")
		job := fs.String("job", "", "")
		pos, err := Parse(fs, tt.args)
		if err != nil || !slices.Equal(pos, tt.pos) || *j != tt.json || *job != tt.job {
			t.Errorf("Parse(%q) = %q json=%v job=%q err=%v", tt.args, pos, *j, *job, err)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := Parse(fs, []string{"a", "--nope"}); err == nil {
		t.Error("unknown flag accepted")
	}
}
