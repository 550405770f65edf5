package mask_test

import (
	"strings"
	"testing"

	"github.com/massgov/bulk-user-import/shared/csvrows"
	"github.com/massgov/bulk-user-import/shared/mask"
)

func TestEmailAndFEIN(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"jane.doe@example.com": "j***@***.com", "J@X.ORG": "J***@***.ORG", "a@b": "a***@***", "nope": "***", "@x.com": "***",
		"é@ex.fr": "é***@***.fr",
	} {
		if got := mask.Email(in); got != want {
			t.Errorf("Email(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"123456789": "*****6789", "12": "**", "1234": "****"} {
		if got := mask.FEIN(in); got != want {
			t.Errorf("FEIN(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTextMasksEveryEmailAndFEIN(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		`fineos provision: HTTP 422: <emailAddress>Victor.Hugo@Example.COM</emailAddress>`: `fineos provision: HTTP 422: <emailAddress>V***@***.COM</emailAddress>`,
		`1 validation error: Value 'a.b+c@x.co' at 'username'`:                             `1 validation error: Value '***@***.co' at 'username'`,
		`user mary.o'connor@x.com exists`:                                                  `user m***@***.com exists`,
		`fein 123456789 and 12-3456789, 987654321;111111111`:                               `fein *****6789 and *****6789, *****4321;*****1111`,
		// Not FEINs: longer numbers, ids, times.
		`account 123456789012, job 20261201-150424-ab12cd, at 15:04:31.123456789Z`: `account 123456789012, job 20261201-150424-ab12cd, at 15:04:31.123456789Z`,
		`arn:aws:iam::123456789012:role/x`:                                         `arn:aws:iam::123456789012:role/x`,
		`no personal data here`:                                                    `no personal data here`,
	} {
		if got := mask.Text(in); got != want {
			t.Errorf("Text(%q)\n = %q\nwant %q", in, got, want)
		}
	}
	// Masking is idempotent.
	s := "x victor@hugo.fr 123456789"
	if once := mask.Text(s); mask.Text(once) != once || strings.Contains(once, "victor") {
		t.Fatalf("%q", once)
	}
}

// Every address the import accepts is masked whole in free text: the
// masking recognises the normaliser's own characters.
func TestTextMasksEveryAddressTheImportAccepts(t *testing.T) {
	t.Parallel()
	locals := []string{"mary.o'connor", "a+b", "x_y", "first.last"}
	for _, r := range csvrows.LocalPartSpecials {
		locals = append(locals, "ab"+string(r)+"cd", "ab"+string(r), "j"+string(r)+string(r)+"k")
	}
	for _, local := range locals {
		addr, err := csvrows.NormalizeEmail(local + "@Example.co.uk")
		if err != nil {
			t.Fatalf("%q: %v", local, err)
		}
		for _, text := range []string{addr, "user " + addr + " exists", "<email>" + addr + "</email>", "(" + addr + ")"} {
			got := mask.Text(text)
			if strings.Contains(got, addr[1:strings.IndexByte(addr, '@')]) || strings.Contains(got, "example") {
				t.Errorf("Text(%q) = %q: the address shows", text, got)
			}
		}
	}
}
