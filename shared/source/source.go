// Package source opens the CSV files an import reads: local paths or
// s3://bucket/key objects, as streams.
package source

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3API lists the S3 call used to read sources.
type S3API interface {
	GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

// Location is a parsed source.
type Location struct {
	Bucket, Key string // for s3:// sources
	Path        string // for local files, absolute
}

// IsS3 reports whether the location is an S3 object.
func (l Location) IsS3() bool { return l.Bucket != "" }

// String is the canonical name of the source: the same file always has the
// same name, whatever relative path named it.
func (l Location) String() string {
	if l.IsS3() {
		return "s3://" + l.Bucket + "/" + l.Key
	}
	return l.Path
}

// Parse reads a command-line source: s3://bucket/key or a local path.
func Parse(src string) (Location, error) {
	if rest, ok := strings.CutPrefix(src, "s3://"); ok {
		bucket, key, _ := strings.Cut(rest, "/")
		if bucket == "" || key == "" {
			return Location{}, fmt.Errorf("source %q: want s3://bucket/key", src)
		}
		return Location{Bucket: bucket, Key: key}, nil
	}
	if src == "" {
		return Location{}, fmt.Errorf("empty source path")
	}
	abs, err := filepath.Abs(src)
	if err != nil {
		return Location{}, fmt.Errorf("source %q: %w", src, err)
	}
	return Location{Path: abs}, nil
}

// Opener opens sources. S3 may be nil when only local files are used.
type Opener struct {
	S3 S3API
}

// Open returns a stream of the source's bytes and its size (-1 when
// unknown). The caller closes the stream.
func (o Opener) Open(ctx context.Context, loc Location) (io.ReadCloser, int64, error) {
	if !loc.IsS3() {
		f, err := os.Open(loc.Path)
		if err != nil {
			return nil, 0, fmt.Errorf("open %s: %w", loc.Path, err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("open %s: %w", loc.Path, err)
		}
		if fi.IsDir() {
			f.Close()
			return nil, 0, fmt.Errorf("open %s: is a directory", loc.Path)
		}
		return f, fi.Size(), nil
	}
	if o.S3 == nil {
		return nil, 0, fmt.Errorf("open %s: no S3 client configured", loc)
	}
	out, err := o.S3.GetObject(ctx, &s3.GetObjectInput{Bucket: &loc.Bucket, Key: &loc.Key})
	if err != nil {
		return nil, 0, fmt.Errorf("open %s: %w", loc, err)
	}
	size := int64(-1)
	if out.ContentLength != nil {
		size = *out.ContentLength
	}
	return out.Body, size, nil
}
