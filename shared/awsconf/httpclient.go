package awsconf

import (
	"bytes"
	"fmt"
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// maxBufferedBody bounds the request bodies copied by bufferedBodyClient.
// SQS and Cognito requests are a few KiB; larger bodies (S3 uploads) pass
// through untouched.
const maxBufferedBody = 8 << 20

// bufferedBodyClient hands the transport its own in-memory copy of each
// small request body. smithy-go closes the request body as soon as the
// response headers arrive; when net/http's write loop has not yet read the
// body's end at that moment, its next read fails and the transport closes
// the connection while the response body is still being read. The SDK
// then retries a request the service already performed (aws-sdk-go-v2
// issues 1825 and 2737): for ReceiveMessage that hides a batch of messages
// for a whole visibility timeout. A private copy cannot be closed under the
// transport's feet.
type bufferedBodyClient struct {
	inner aws.HTTPClient
}

func (c bufferedBodyClient) Do(req *http.Request) (*http.Response, error) {
	if req.Body == nil || req.Body == http.NoBody || req.ContentLength < 0 || req.ContentLength > maxBufferedBody {
		return c.inner.Do(req)
	}
	buf, err := io.ReadAll(io.LimitReader(req.Body, req.ContentLength+1))
	if err != nil {
		return nil, fmt.Errorf("buffer request body: %w", err)
	}
	if int64(len(buf)) != req.ContentLength {
		return nil, fmt.Errorf("buffer request body: read %d bytes, Content-Length is %d", len(buf), req.ContentLength)
	}
	req.Body = io.NopCloser(bytes.NewReader(buf))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	return c.inner.Do(req)
}
