package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestJSONLoggerMasksAttributes(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, err := New(&buf, JSON, "info")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("row", Email("jane.doe@example.com"), FEIN("123456789"))
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not JSON: %s", buf.String())
	}
	if strings.Contains(buf.String(), "jane.doe") || strings.Contains(buf.String(), "12345") {
		t.Fatalf("personal data leaked: %s", buf.String())
	}
	if line["email"] != "j***@***.com" || line["fein"] != "*****6789" {
		t.Fatalf("got %v", line)
	}
}

func TestEveryLineIsMaskedOnItsWayOut(t *testing.T) {
	t.Parallel()
	for _, f := range []Format{JSON, Text} {
		var buf bytes.Buffer
		log, err := New(&buf, f, "info")
		if err != nil {
			t.Fatal(err)
		}
		log.With("who", "victor.hugo@example.fr").Warn("cognito refused victor.hugo@example.fr",
			"err", errors.New(`Value 'Victor.Hugo@Example.fr' at 'username' failed`), "fein", "12-3456789",
			"detail", fmt.Errorf("wrapped: %w", errors.New("fein 123456789")), "count", 123456789)
		out := buf.String()
		for _, leak := range []string{"ictor", "3456789\"", "12-3456789", "fein 123456789"} {
			if strings.Contains(out, leak) {
				t.Errorf("%s: %q leaked:\n%s", f, leak, out)
			}
		}
		if !strings.Contains(out, "v***@***.fr") || !strings.Contains(out, "*****6789") {
			t.Errorf("%s: not masked as expected:\n%s", f, out)
		}
	}
}

func TestNewRefusesUnknownSettings(t *testing.T) {
	t.Parallel()
	if _, err := New(&bytes.Buffer{}, "xml", "info"); err == nil {
		t.Error("format xml accepted")
	}
	if _, err := New(&bytes.Buffer{}, JSON, "loud"); err == nil {
		t.Error("level loud accepted")
	}
}

// Every key appears once per line: a call's attribute replaces With's.
func TestNoKeyTwice(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, err := New(&buf, JSON, "info")
	if err != nil {
		t.Fatal(err)
	}
	log.With("step", "check", "error_code", "A").With("job", "j1").
		Warn("sent to the dead-letter queue", "error_code", "B", "reason", "x", "reason", "y")
	log.With("step", "check").WithGroup("g").With("step", "inner").Info("grouped", "step", "innermost")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", buf.String())
	}
	for _, l := range lines {
		if err := StrictJSON([]byte(l)); err != nil {
			t.Errorf("%v: %s", err, l)
		}
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first["error_code"] != "B" || first["reason"] != "y" || first["step"] != "check" || first["job"] != "j1" {
		t.Errorf("got %v", first)
	}
	var second struct {
		Step string         `json:"step"`
		G    map[string]any `json:"g"`
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatal(err)
	}
	if second.Step != "check" || second.G["step"] != "innermost" {
		t.Errorf("got %s", lines[1])
	}
}

func TestStrictJSONFindsDuplicates(t *testing.T) {
	t.Parallel()
	for line, ok := range map[string]bool{
		`{"a":1,"b":{"a":2}}`:       true,
		`{"a":1,"a":2}`:             false,
		`{"a":1,"b":{"c":2,"c":3}}`: false,
		`{"a":[{"x":1},{"x":2}]}`:   true,
		`{"a":1`:                    false,
		`{"a":1} {"b":2}`:           false,
	} {
		if err := StrictJSON([]byte(line)); (err == nil) != ok {
			t.Errorf("%s: got %v", line, err)
		}
	}
}
