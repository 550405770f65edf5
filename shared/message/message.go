// Package message defines the body of the SQS message that carries one CSV
// row from the splitter to the workers. Bodies are versioned JSON; a worker
// treats every body as untrusted and checks it with Decode.
package message

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/massgov/bulk-user-import/shared/csvrows"
)

// Version is the schema version this code writes and reads.
const Version = 1

// MaxBodyBytes bounds a body. Real bodies are a few hundred bytes; anything
// larger is refused before it is parsed.
const MaxBodyBytes = 4 << 10

// jobIDPattern is the shape of a job id: it appears in S3 keys, file names
// and logs, so it is restricted to a safe alphabet.
var jobIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidJobID reports whether id can name a job.
func ValidJobID(id string) error {
	if !jobIDPattern.MatchString(id) {
		return fmt.Errorf("job id %q must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", id)
	}
	return nil
}

// Row asks a worker to register one (email, FEIN) pair of a job.
type Row struct {
	Version           int    `json:"v"`
	Job               string `json:"job"`
	Row               int64  `json:"row"`
	Email             string `json:"email"`
	FEIN              string `json:"fein"`
	ForceRegistration bool   `json:"force_registration"`
}

// ErrMalformed is wrapped by every Decode error.
var ErrMalformed = errors.New("malformed message")

// Encode returns the JSON body for r, after checking it as Decode would.
func Encode(r Row) (string, error) {
	r.Version = Version
	if err := r.validate(); err != nil {
		return "", err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return "", fmt.Errorf("encode message: %w", err)
	}
	return string(b), nil
}

// Decode parses and checks a body. Every error wraps ErrMalformed.
func Decode(body string) (Row, error) {
	if len(body) > MaxBodyBytes {
		return Row{}, fmt.Errorf("%w: body of %d bytes exceeds %d", ErrMalformed, len(body), MaxBodyBytes)
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(body)))
	dec.DisallowUnknownFields()
	var r Row
	if err := dec.Decode(&r); err != nil {
		return Row{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return Row{}, fmt.Errorf("%w: trailing data after the JSON object", ErrMalformed)
	}
	if err := r.validate(); err != nil {
		return Row{}, err
	}
	return r, nil
}

func (r Row) validate() error {
	if r.Version != Version {
		return fmt.Errorf("%w: version %d, want %d", ErrMalformed, r.Version, Version)
	}
	if err := ValidJobID(r.Job); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if r.Row <= 0 {
		return fmt.Errorf("%w: row %d must be positive", ErrMalformed, r.Row)
	}
	if fein, err := csvrows.NormalizeFEIN(r.FEIN); err != nil || fein != r.FEIN {
		return fmt.Errorf("%w: fein is not 9 digits", ErrMalformed)
	}
	if email, err := csvrows.NormalizeEmail(r.Email); err != nil || email != r.Email {
		return fmt.Errorf("%w: email is not a normalised address", ErrMalformed)
	}
	return nil
}
