package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestMaskEmail(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"jane.doe@example.com": "j***@***.com",
		"a@b.co":               "a***@***.co",
		"x@localhost":          "x***@***",
		"nope":                 "***",
		"@b.co":                "***",
		"é@b.verylongtld":      "é***@***",
	}
	for in, want := range tests {
		if got := MaskEmail(in); got != want {
			t.Errorf("MaskEmail(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMaskFEIN(t *testing.T) {
	t.Parallel()
	tests := map[string]string{"123456789": "*****6789", "1234": "****", "": ""}
	for in, want := range tests {
		if got := MaskFEIN(in); got != want {
			t.Errorf("MaskFEIN(%q) = %q, want %q", in, got, want)
		}
	}
}

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

func TestNewRefusesUnknownSettings(t *testing.T) {
	t.Parallel()
	if _, err := New(&bytes.Buffer{}, "xml", "info"); err == nil {
		t.Error("format xml accepted")
	}
	if _, err := New(&bytes.Buffer{}, JSON, "loud"); err == nil {
		t.Error("level loud accepted")
	}
}
