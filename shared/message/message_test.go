package message

import (
	"errors"
	"strings"
	"testing"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	t.Parallel()
	in := Row{Job: "job-1", Row: 42, Email: "a@b.co", FEIN: "123456789", ForceRegistration: true}
	body, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, `"v":1`) {
		t.Fatalf("body %s lacks the version", body)
	}
	out, err := Decode(body)
	if err != nil {
		t.Fatal(err)
	}
	in.Version = Version
	if out != in {
		t.Fatalf("got %+v, want %+v", out, in)
	}
}

func TestDecodeRefusesMalformedBodies(t *testing.T) {
	t.Parallel()
	valid := `{"v":1,"job":"j","row":1,"email":"a@b.co","fein":"123456789","force_registration":false}`
	tests := map[string]string{
		"not json":         "hello",
		"empty":            "",
		"array":            "[1]",
		"wrong version":    strings.Replace(valid, `"v":1`, `"v":2`, 1),
		"no version":       strings.Replace(valid, `"v":1,`, ``, 1),
		"unknown field":    strings.Replace(valid, `}`, `,"x":1}`, 1),
		"trailing data":    valid + valid,
		"bad job":          strings.Replace(valid, `"job":"j"`, `"job":"../etc"`, 1),
		"zero row":         strings.Replace(valid, `"row":1`, `"row":0`, 1),
		"negative row":     strings.Replace(valid, `"row":1`, `"row":-5`, 1),
		"short fein":       strings.Replace(valid, `123456789`, `1234`, 1),
		"upper-case email": strings.Replace(valid, `a@b.co`, `A@b.co`, 1),
		"bad email":        strings.Replace(valid, `a@b.co`, `nope`, 1),
		"huge":             `{"v":1,"job":"` + strings.Repeat("x", MaxBodyBytes) + `"}`,
		"wrong types":      `{"v":"1","job":1,"row":"1"}`,
	}
	for name, body := range tests {
		if _, err := Decode(body); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
	if _, err := Decode(valid); err != nil {
		t.Fatalf("valid body refused: %v", err)
	}
}

func TestValidJobID(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"a", "20261129-093000-ab12", "Job_1.2"} {
		if err := ValidJobID(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", ".a", "a/b", "a b", strings.Repeat("a", 65), "é"} {
		if ValidJobID(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(`{"v":1,"job":"j","row":1,"email":"a@b.co","fein":"123456789"}`)
	f.Fuzz(func(t *testing.T, body string) {
		r, err := Decode(body)
		if err != nil {
			return
		}
		again, err := Encode(r)
		if err != nil {
			t.Fatalf("decoded row does not encode: %v", err)
		}
		if r2, err := Decode(again); err != nil || r2 != r {
			t.Fatalf("round trip changed %+v to %+v (%v)", r, r2, err)
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	r := Row{Job: "20261129-093000-ab12", Row: 123456, Email: "jane.doe@example.com", FEIN: "123456789"}
	for b.Loop() {
		if _, err := Encode(r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	body, _ := Encode(Row{Job: "20261129-093000-ab12", Row: 123456, Email: "jane.doe@example.com", FEIN: "123456789"})
	for b.Loop() {
		if _, err := Decode(body); err != nil {
			b.Fatal(err)
		}
	}
}
