// Package csvrows reads import CSV files row by row and normalises each row's
// FEIN and email. It streams: memory use does not depend on the file's size.
//
// A file is refused as a whole (NewReader or Next returns an *Error) when it
// has no usable header, is not CSV, or holds a record so large that it can
// only be a broken quote. A single bad row never refuses the file: it comes
// back as a Row with a Reject naming the line, the field and the reason.
package csvrows

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/massgov/bulk-user-import/shared/textbound"
)

// Limits on untrusted input.
const (
	// MaxRecordBytes bounds one CSV record (all its physical lines). Larger
	// records refuse the file: they are almost always an unbalanced quote
	// swallowing the rest of the file.
	MaxRecordBytes = 256 << 10
	// MaxFieldBytes bounds one field; a longer field rejects its row.
	MaxFieldBytes = 1024
	// MaxColumns bounds the header's width.
	MaxColumns = 200
)

// Required header columns.
const (
	ColumnFEIN  = "fein"
	ColumnEmail = "email"
)

// Error refuses a whole file. Line is 0 when the error is not tied to a line.
type Error struct {
	File string
	Line int
	Err  error
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s: line %d: %v", e.File, e.Line, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.File, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrRecordTooLarge is wrapped by the *Error returned for an oversized record.
var ErrRecordTooLarge = fmt.Errorf("record larger than %d KiB (unbalanced quote?)", MaxRecordBytes>>10)

// Reject says why a row was not accepted.
type Reject struct {
	Code   string // one of the Code* constants
	Field  string // the column concerned, if any
	Reason string // a sentence an operator can act on
}

func (r *Reject) Error() string {
	if r.Field != "" {
		return fmt.Sprintf("%s: %s", r.Field, r.Reason)
	}
	return r.Reason
}

// Row is one data record of a file.
type Row struct {
	Line   int      // line where the record starts (the header is usually line 1)
	Fields []string // the original values, in header order, sanitised for storage
	Email  string   // normalised; empty when rejected
	FEIN   string   // normalised; empty when rejected
	Reject *Reject  // nil when the row is accepted
}

// Reader streams the rows of one CSV file.
type Reader struct {
	name     string
	csv      *csv.Reader
	bounded  *boundedReader
	header   []string
	feinIdx  int
	emailIdx int
}

// NewReader reads and checks the header of the CSV file called name. The
// header must hold the columns fein and email, matched case-insensitively
// after trimming spaces, in any order; other columns are kept.
func NewReader(name string, r io.Reader) (*Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if bom, err := br.Peek(3); err == nil && bytes.Equal(bom, []byte("\xEF\xBB\xBF")) {
		_, _ = br.Discard(3)
	}
	if bom, err := br.Peek(2); err == nil && (bytes.Equal(bom, []byte("\xFF\xFE")) || bytes.Equal(bom, []byte("\xFE\xFF"))) {
		return nil, &Error{File: name, Err: errors.New("file is UTF-16 text, not UTF-8: save it as \"CSV UTF-8\"")}
	}
	bounded := &boundedReader{r: br, max: MaxRecordBytes, line: 1, start: 1, fieldStart: true}
	cr := csv.NewReader(bounded)
	cr.FieldsPerRecord = -1 // rows are checked one by one, not refused
	cr.ReuseRecord = true

	rd := &Reader{name: name, csv: cr, bounded: bounded, feinIdx: -1, emailIdx: -1}
	if err := rd.readHeader(); err != nil {
		return nil, err
	}
	return rd, nil
}

func (r *Reader) fileError(line int, err error) *Error {
	return &Error{File: r.name, Line: line, Err: err}
}

func (r *Reader) readHeader() error {
	for {
		rec, err := r.csv.Read()
		if errors.Is(err, io.EOF) {
			return r.fileError(0, errors.New("file is empty: no header with columns fein and email"))
		}
		if err != nil {
			return r.wrapReadError(err, "not a CSV file")
		}
		if blank(rec) {
			continue
		}
		line, _ := r.csv.FieldPos(0)
		if len(rec) > MaxColumns {
			return r.fileError(line, fmt.Errorf("header has %d columns, more than the %d allowed", len(rec), MaxColumns))
		}
		r.header = make([]string, len(rec))
		for i, name := range rec {
			if !utf8.ValidString(name) {
				return r.fileError(line, errors.New("header is not valid UTF-8: not a UTF-8 CSV file"))
			}
			r.header[i] = sanitize(name)
			switch strings.ToLower(strings.TrimSpace(name)) {
			case ColumnFEIN:
				if r.feinIdx >= 0 {
					return r.fileError(line, errors.New("header has the column fein twice"))
				}
				r.feinIdx = i
			case ColumnEmail:
				if r.emailIdx >= 0 {
					return r.fileError(line, errors.New("header has the column email twice"))
				}
				r.emailIdx = i
			}
		}
		var missing []string
		if r.feinIdx < 0 {
			missing = append(missing, ColumnFEIN)
		}
		if r.emailIdx < 0 {
			missing = append(missing, ColumnEmail)
		}
		if len(missing) > 0 {
			// Describe the first line without its values: a file without a
			// header has a person's email and FEIN there.
			return r.fileError(line, fmt.Errorf("header lacks the column(s) %s: the first line has %d fields, none named %s (is the header missing?)",
				strings.Join(missing, ", "), len(r.header), strings.Join(missing, " or ")))
		}
		return nil
	}
}

// wrapReadError turns an error of the CSV reader into a file-refusing *Error.
func (r *Reader) wrapReadError(err error, what string) *Error {
	var pe *csv.ParseError
	switch {
	case errors.Is(err, ErrRecordTooLarge):
		return r.fileError(r.bounded.start, ErrRecordTooLarge)
	case errors.As(err, &pe):
		return r.fileError(pe.StartLine, fmt.Errorf("%s: %v", what, pe.Err))
	default:
		return r.fileError(0, fmt.Errorf("read: %w", err))
	}
}

// Header returns the file's column names as written (sanitised).
func (r *Reader) Header() []string { return r.header }

// Next returns the next non-blank row, io.EOF after the last one, or an
// *Error that refuses the rest of the file.
func (r *Reader) Next() (Row, error) {
	for {
		rec, err := r.csv.Read()
		if errors.Is(err, io.EOF) {
			return Row{}, io.EOF
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) && !errors.Is(err, ErrRecordTooLarge) {
			// A malformed record (stray quote): reject it, go on with the next one.
			return Row{Line: pe.StartLine, Fields: []string{}, Reject: &Reject{
				Code: CodeParseError, Reason: fmt.Sprintf("malformed CSV record: %v", pe.Err),
			}}, nil
		}
		if err != nil {
			return Row{}, r.wrapReadError(err, "malformed CSV")
		}
		if blank(rec) {
			continue
		}
		line, _ := r.csv.FieldPos(0)
		return r.row(line, rec), nil
	}
}

func (r *Reader) row(line int, rec []string) Row {
	row := Row{Line: line, Fields: make([]string, len(rec))}
	for i, f := range rec {
		row.Fields[i] = sanitize(f)
	}
	if len(rec) != len(r.header) && !onlyEmptyExtras(rec, len(r.header)) {
		row.Reject = &Reject{Code: CodeFieldCount,
			Reason: fmt.Sprintf("row has %d fields, the header has %d", len(rec), len(r.header))}
		return row
	}
	for i, f := range rec {
		if i >= len(r.header) {
			break
		}
		switch {
		case len(f) > MaxFieldBytes:
			row.Reject = &Reject{Code: CodeFieldTooLong, Field: r.column(i),
				Reason: fmt.Sprintf("longer than %d bytes", MaxFieldBytes)}
			return row
		case !utf8.ValidString(f) || strings.IndexByte(f, 0) >= 0:
			row.Reject = &Reject{Code: CodeInvalidUTF8, Field: r.column(i),
				Reason: "not valid UTF-8 text"}
			return row
		}
	}
	fein, err := NormalizeFEIN(rec[r.feinIdx])
	if err != nil {
		row.Reject = &Reject{Code: CodeInvalidFEIN, Field: ColumnFEIN, Reason: err.Error()}
		return row
	}
	email, err := NormalizeEmail(rec[r.emailIdx])
	if err != nil {
		row.Reject = &Reject{Code: CodeInvalidEmail, Field: ColumnEmail, Reason: err.Error()}
		return row
	}
	row.FEIN, row.Email = fein, email
	return row
}

func (r *Reader) column(i int) string {
	if name := strings.TrimSpace(r.header[i]); name != "" {
		return textbound.Truncate(name, 64)
	}
	return fmt.Sprintf("column %d", i+1)
}

// blank reports whether every field of a record is empty or white space,
// as spreadsheet exports write for empty lines (",,,").
func blank(rec []string) bool {
	for _, f := range rec {
		if strings.TrimSpace(f) != "" {
			return false
		}
	}
	return true
}

// onlyEmptyExtras reports whether rec is longer than want only by trailing
// empty fields, as some spreadsheet exports write.
func onlyEmptyExtras(rec []string, want int) bool {
	if len(rec) < want {
		return false
	}
	for _, f := range rec[want:] {
		if strings.TrimSpace(f) != "" {
			return false
		}
	}
	return true
}

// sanitize makes a field storable as PostgreSQL text and bounded in size:
// invalid UTF-8 and NUL bytes are replaced, long values truncated.
func sanitize(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	}
	return textbound.Truncate(s, MaxFieldBytes)
}

// boundedReader fails once a CSV record grows beyond max bytes. To know
// where records end it follows RFC 4180 quoting as encoding/csv does: a
// quote opens a quoted field only at the start of a field, "" inside one is
// an escaped quote, and a newline ends a record only outside quotes. (A
// stray quote inside an unquoted field is a per-row parse error, not the
// start of a quoted field.) It also counts lines, to say where an oversized
// record starts.
type boundedReader struct {
	r          io.Reader
	max        int
	n          int  // bytes of the current record so far
	inQuote    bool // inside a quoted field
	quoteSeen  bool // inside a quoted field, just after a quote: closes it unless another quote follows
	fieldStart bool // at the start of a field (outside quotes)
	line       int  // current line number
	start      int  // line where the current record started
}

func (b *boundedReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	for i, c := range p[:n] {
		if c == '\n' {
			b.line++
		}
		if b.quoteSeen {
			b.quoteSeen = false
			if c == '"' {
				b.n++ // an escaped quote: still inside the field
				continue
			}
			b.inQuote = false // the quote closed the field; c is outside it
		}
		switch {
		case b.inQuote:
			if c == '"' {
				b.quoteSeen = true
			}
		case c == '"' && b.fieldStart:
			b.inQuote = true
			b.fieldStart = false
		case c == '\n':
			b.n, b.start, b.fieldStart = 0, b.line, true
			continue
		default:
			b.fieldStart = c == ','
		}
		b.n++
		if b.n > b.max {
			return i, ErrRecordTooLarge
		}
	}
	return n, err
}
