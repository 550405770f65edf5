package cli

import (
	"flag"
	"io"
	"slices"
	"testing"
	"time"
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

func TestDurationFlagAcceptsDays(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{"30d": 30 * 24 * time.Hour, "0": 0, "0d": 0, "12h": 12 * time.Hour, "90m": 90 * time.Minute, "1.5s": 1500 * time.Millisecond} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var d time.Duration
		DurationVar(fs, &d, "retention", time.Hour, "")
		if err := fs.Parse([]string{"--retention", in}); err != nil || d != want {
			t.Errorf("--retention %s = %s, %v; want %s", in, d, err, want)
		}
	}
	for _, bad := range []string{"30x", "d", "-3d", "1e9d", ""} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var d time.Duration
		DurationVar(fs, &d, "retention", 0, "")
		if err := fs.Parse([]string{"--retention", bad}); err == nil {
			t.Errorf("--retention %q accepted as %s", bad, d)
		}
	}
	var d time.Duration
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	DurationVar(fs, &d, "retention", 30*24*time.Hour, "")
	if got := fs.Lookup("retention").DefValue; got != "30d" {
		t.Errorf("default shown as %q, want 30d", got)
	}
}
