package csvrows

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func readAll(t *testing.T, content string) ([]Row, error) {
	t.Helper()
	r, err := NewReader("test.csv", strings.NewReader(content))
	if err != nil {
		return nil, err
	}
	var rows []Row
	for {
		row, err := r.Next()
		if errors.Is(err, io.EOF) {
			return rows, nil
		}
		if err != nil {
			return rows, err
		}
		rows = append(rows, row)
	}
}

func mustReadAll(t *testing.T, content string) []Row {
	t.Helper()
	rows, err := readAll(t, content)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return rows
}

func TestReaderAcceptsBOMAndCRLF(t *testing.T) {
	t.Parallel()
	rows := mustReadAll(t, "\xEF\xBB\xBFfein,email\r\n12-3456789,Jane.Doe@Example.com\r\n")
	if len(rows) != 1 {
		t.Fatalf("got %d rows, want 1", len(rows))
	}
	got := rows[0]
	if got.Reject != nil {
		t.Fatalf("unexpected reject: %v", got.Reject)
	}
	if got.FEIN != "123456789" || got.Email != "jane.doe@example.com" || got.Line != 2 {
		t.Fatalf("got %+v", got)
	}
}

func TestReaderHeaderIsCaseInsensitiveReorderedAndKeepsExtraColumns(t *testing.T) {
	t.Parallel()
	r, err := NewReader("x.csv", strings.NewReader(" Email ,Name,FEIN\nA@B.CO,\"Doe, Jane\",123456789\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.Header(), "|"); got != " Email |Name|FEIN" {
		t.Fatalf("header %q", got)
	}
	row, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if row.Email != "a@b.co" || row.FEIN != "123456789" || row.Fields[1] != "Doe, Jane" {
		t.Fatalf("got %+v", row)
	}
}

func TestReaderQuotedFieldWithNewlineKeepsLineNumbers(t *testing.T) {
	t.Parallel()
	rows := mustReadAll(t, "fein,email,note\n1,a@b.co,\"two\nlines, and a comma\"\n2,c@d.co,x\n")
	if len(rows) != 2 {
		t.Fatalf("got %d rows", len(rows))
	}
	if rows[0].Fields[2] != "two\nlines, and a comma" || rows[0].Line != 2 {
		t.Fatalf("first row %+v", rows[0])
	}
	if rows[1].Line != 4 || rows[1].FEIN != "000000002" {
		t.Fatalf("second row %+v", rows[1])
	}
}

func TestReaderSkipsBlankLines(t *testing.T) {
	t.Parallel()
	rows := mustReadAll(t, "\n\nfein,email\n\n123456789,a@b.co\n,\n  ,  \n\n987654321,c@d.co\n")
	if len(rows) != 2 {
		t.Fatalf("got %d rows, want 2: %+v", len(rows), rows)
	}
	if rows[0].Line != 5 || rows[1].Line != 9 {
		t.Fatalf("lines %d %d", rows[0].Line, rows[1].Line)
	}
}

func TestReaderRefusesFiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, content, want string
	}{
		{"empty", "", "file is empty"},
		{"only blank lines", "\n\n", "file is empty"},
		{"missing email", "fein,name\n1,x\n", "lacks the column(s) email"},
		{"missing both", "a,b\n1,2\n", "lacks the column(s) fein, email: the first line has 2 fields, none named fein or email (is the header missing?)"},
		{"no header", "123456789,victor@hugo.fr\n", "the first line has 2 fields, none named fein or email"},
		{"duplicate column", "fein,email,Email\n", "column email twice"},
		{"utf-16", "\xFF\xFEf\x00e\x00i\x00n\x00", "UTF-16"},
		{"binary", "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not valid UTF-8"},
		{"json", `{"fein": 1, "email": "a@b.co"}`, "not a CSV file"},
		{"not csv quotes", "fe\"in,email\n", "not a CSV file"},
		{"too many columns", "fein,email" + strings.Repeat(",x", MaxColumns) + "\n", "more than the 200 allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := readAll(t, tt.content)
			var fe *Error
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if fe.File != "test.csv" || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %q, want it to name test.csv and contain %q", err, tt.want)
			}
		})
	}
}

func TestReaderRefusesOversizedRecordWithItsLine(t *testing.T) {
	t.Parallel()
	content := "fein,email\n123456789,a@b.co\n1,\"unterminated\n" + strings.Repeat("x,y\n", MaxRecordBytes/4+10)
	rows, err := readAll(t, content)
	var fe *Error
	if !errors.As(err, &fe) || !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("err = %v, want ErrRecordTooLarge", err)
	}
	if fe.Line != 3 {
		t.Fatalf("line = %d, want 3", fe.Line)
	}
	if len(rows) != 1 {
		t.Fatalf("rows before the bad record: %d, want 1", len(rows))
	}
}

func TestReaderRejectsBadRowsAndGoesOn(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("n", MaxFieldBytes+1)
	content := strings.Join([]string{
		"fein,email,name",
		"12345678A,a@b.co,x",        // 2 bad fein
		"1234567890,a@b.co,x",       // 3 too long fein
		"123456789,not-an-email,x",  // 4
		"123456789,a@b.co",          // 5 field count
		"123456789,a@b.co,x,extra",  // 6 field count
		"123456789,a@b.co," + long,  // 7 too long
		"123456789,a@b.co,\xff\xfe", // 8 invalid utf-8
		"123456789,a\"b@c.co,x",     // 9 bare quote
		"123456789,ok@b.co,x,,",     // 10 trailing empties: accepted
		",a@b.co,x",                 // 11 empty fein
		"123456789,,x",              // 12 empty email
	}, "\n") + "\n"
	rows := mustReadAll(t, content)
	want := []struct {
		line  int
		code  string
		field string
	}{
		{2, CodeInvalidFEIN, "fein"},
		{3, CodeInvalidFEIN, "fein"},
		{4, CodeInvalidEmail, "email"},
		{5, CodeFieldCount, ""},
		{6, CodeFieldCount, ""},
		{7, CodeFieldTooLong, "name"},
		{8, CodeInvalidUTF8, "name"},
		{9, CodeParseError, ""},
		{10, "", ""},
		{11, CodeInvalidFEIN, "fein"},
		{12, CodeInvalidEmail, "email"},
	}
	if len(rows) != len(want) {
		t.Fatalf("got %d rows, want %d", len(rows), len(want))
	}
	for i, w := range want {
		r := rows[i]
		if r.Line != w.line {
			t.Errorf("row %d: line %d, want %d", i, r.Line, w.line)
		}
		if w.code == "" {
			if r.Reject != nil {
				t.Errorf("line %d: unexpected reject %v", r.Line, r.Reject)
			}
			continue
		}
		if r.Reject == nil || r.Reject.Code != w.code || r.Reject.Field != w.field {
			t.Errorf("line %d: reject %+v, want code %s field %q", r.Line, r.Reject, w.code, w.field)
		}
		if r.Email != "" || r.FEIN != "" {
			t.Errorf("line %d: rejected row carries values %q %q", r.Line, r.Email, r.FEIN)
		}
		for _, f := range r.Fields {
			if len(f) > MaxFieldBytes+len("…") {
				t.Errorf("line %d: stored field of %d bytes", r.Line, len(f))
			}
		}
	}
	if got := rows[5].Fields[2]; got == "" || !strings.HasSuffix(got, "…") {
		t.Errorf("too long field not truncated for storage: %d bytes", len(got))
	}
	if got := rows[6].Fields[2]; got != "\uFFFD" {
		t.Errorf("invalid UTF-8 stored as %q", got)
	}
}

func TestNormalizeFEIN(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"123456789", "123456789"},
		{"12-3456789", "123456789"},
		{" 12 345 6789 ", "123456789"},
		{"3456789", "003456789"},
		{"1", "000000001"},
		{"", ""},
		{"--", ""},
		{"1234567890", ""},
		{"12345678x", ""},
		{"١٢٣", ""},
	}
	for _, tt := range tests {
		got, err := NormalizeFEIN(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("NormalizeFEIN(%q) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("NormalizeFEIN(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestNormalizeEmail(t *testing.T) {
	t.Parallel()
	ok := map[string]string{
		" Jane.Doe@Example.COM ":       "jane.doe@example.com",
		"a+tag@sub.example.org":        "a+tag@sub.example.org",
		"o'brien@example.ie":           "o'brien@example.ie",
		"x@b.co":                       "x@b.co",
		"first_last-1@my-domain.co.uk": "first_last-1@my-domain.co.uk",
	}
	for in, want := range ok {
		got, err := NormalizeEmail(in)
		if err != nil || got != want {
			t.Errorf("NormalizeEmail(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := []string{
		"", "plain", "@example.com", "a@", "a@@b.co", "a@b@c.co", "a@localhost",
		".a@b.co", "a.@b.co", "a..b@c.co", "a b@c.co", "Jane <a@b.co>", "a@-b.co",
		"a@b-.co", "a@b..co", "a@b.c", "a@b.123", "a@exa_mple.com", "é@b.co",
		strings.Repeat("a", 65) + "@b.co", "a@" + strings.Repeat("b", 64) + ".co",
		strings.Repeat("a", 60) + "@" + strings.Repeat("b.", 100) + "co",
	}
	for _, in := range bad {
		got, err := NormalizeEmail(in)
		if err == nil {
			t.Errorf("NormalizeEmail(%q) = %q, want an error", in, got)
			continue
		}
		// Printed and logged: the error names the problem, not the value.
		for _, part := range strings.FieldsFunc(strings.ToLower(in), func(r rune) bool { return r == '@' || r == '.' || r == ' ' }) {
			if len(part) >= 3 && strings.Contains(strings.ToLower(err.Error()), part) {
				t.Errorf("NormalizeEmail(%q): error %q echoes %q", in, err, part)
			}
		}
	}
	for _, in := range []string{"12345678x", "1234567890", "77-12345X6"} {
		if _, err := NormalizeFEIN(in); err == nil || strings.ContainsAny(err.Error(), "x") || strings.Contains(err.Error(), "12345") {
			t.Errorf("NormalizeFEIN(%q): error %v", in, err)
		}
	}
}

func FuzzReader(f *testing.F) {
	f.Add("fein,email\n123,a@b.co\n")
	f.Add("\xEF\xBB\xBFEMAIL,fein\r\n\"a\"\"b@c.co\",1\r\n")
	f.Add("fein,email\n\"unterminated\n")
	f.Fuzz(func(t *testing.T, content string) {
		r, err := NewReader("fuzz.csv", strings.NewReader(content))
		if err != nil {
			return
		}
		for i := 0; i < 10000; i++ {
			row, err := r.Next()
			if err != nil {
				return
			}
			if row.Reject == nil && (len(row.FEIN) != 9 || row.Email == "") {
				t.Fatalf("accepted row without values: %+v", row)
			}
		}
	})
}

func BenchmarkReadAndNormalise(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("fein,email,first_name,last_name\n")
	for i := range 10000 {
		sb.WriteString(strings.Join([]string{"12-345678" + string(rune('0'+i%10)), "User.Name" + strings.Repeat("x", i%7) + "@Example.com", "First", "Last"}, ","))
		sb.WriteString("\n")
	}
	content := sb.String()
	b.SetBytes(int64(len(content)))
	b.ReportAllocs()
	for b.Loop() {
		r, err := NewReader("bench.csv", strings.NewReader(content))
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			row, err := r.Next()
			if err != nil {
				break
			}
			if row.Reject != nil {
				b.Fatalf("rejected: %v", row.Reject)
			}
			n++
		}
		if n != 10000 {
			b.Fatalf("%d rows", n)
		}
	}
	b.ReportMetric(float64(b.N*10000)/b.Elapsed().Seconds(), "rows/s")
}

func TestStrayQuoteDoesNotRefuseTheRestOfALargeFile(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("fein,email,note\n123456789,a@b.co,say \"hi\n")
	for i := 0; b.Len() < 2*MaxRecordBytes; i++ {
		b.WriteString("123456789,a@b.co,\"quoted, \"\"fine\"\"\"\n")
	}
	rows, err := readAll(t, b.String())
	if err != nil {
		t.Fatalf("file refused: %v", err)
	}
	if rows[0].Reject == nil || rows[0].Reject.Code != CodeParseError || rows[0].Line != 2 {
		t.Fatalf("first row %+v", rows[0])
	}
	for _, r := range rows[1:] {
		if r.Reject != nil || r.Fields[2] != `quoted, "fine"` {
			t.Fatalf("row %d: %+v", r.Line, r)
		}
	}
}
