package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// StrictJSON checks that line is exactly one JSON value in which no object
// has a key twice, at any depth: what a strict consumer of the JSON logs
// (a log pipeline that rejects ambiguous lines) accepts.
func StrictJSON(line []byte) error {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if err := strictValue(dec, ""); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("more than one JSON value on the line")
	}
	return nil
}

func strictValue(dec *json.Decoder, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("not JSON at %q: %w", path, err)
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return fmt.Errorf("not JSON at %q: %w", path, err)
			}
			key, _ := k.(string)
			if seen[key] {
				return fmt.Errorf("key %q twice", path+key)
			}
			seen[key] = true
			if err := strictValue(dec, path+key+"."); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return fmt.Errorf("not JSON at %q: %w", path, err)
		}
	case json.Delim('['):
		for dec.More() {
			if err := strictValue(dec, path+"[]."); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return fmt.Errorf("not JSON at %q: %w", path, err)
		}
	}
	return nil
}
