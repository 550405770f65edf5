package awsconf

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// closingBody fails reads once closed, as smithy-go's request body does.
type closingBody struct {
	r      io.Reader
	closed bool
}

func (b *closingBody) Read(p []byte) (int, error) {
	if b.closed {
		return 0, errors.New("read on closed body")
	}
	return b.r.Read(p)
}

func (b *closingBody) Close() error { b.closed = true; return nil }

type recordingClient struct{ got *http.Request }

func (c *recordingClient) Do(req *http.Request) (*http.Response, error) {
	c.got = req
	return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
}

func TestTransportBodySurvivesTheCallerClosingItsOwn(t *testing.T) {
	t.Parallel()
	orig := &closingBody{r: strings.NewReader(`{"QueueUrl":"q"}`)}
	req, _ := http.NewRequest(http.MethodPost, "http://x/", orig)
	req.ContentLength = 16
	inner := &recordingClient{}
	if _, err := (bufferedBodyClient{inner: inner}).Do(req); err != nil {
		t.Fatal(err)
	}
	orig.Close() // what smithy-go does once the response headers arrive
	body, err := io.ReadAll(inner.got.Body)
	if err != nil || string(body) != `{"QueueUrl":"q"}` {
		t.Fatalf("transport body %q, %v", body, err)
	}
	again, _ := inner.got.GetBody()
	if b, _ := io.ReadAll(again); string(b) != `{"QueueUrl":"q"}` {
		t.Fatalf("GetBody %q", b)
	}
}

func TestLargeOrUnknownBodiesPassThrough(t *testing.T) {
	t.Parallel()
	for _, n := range []int64{-1, maxBufferedBody + 1} {
		orig := &closingBody{r: strings.NewReader("x")}
		req, _ := http.NewRequest(http.MethodPut, "http://x/", orig)
		req.ContentLength = n
		inner := &recordingClient{}
		if _, err := (bufferedBodyClient{inner: inner}).Do(req); err != nil {
			t.Fatal(err)
		}
		if inner.got.Body != orig {
			t.Fatalf("content length %d: body replaced", n)
		}
	}
}

func TestShortBodyIsAnError(t *testing.T) {
	t.Parallel()
	req, _ := http.NewRequest(http.MethodPost, "http://x/", strings.NewReader("abc"))
	req.ContentLength = 10
	if _, err := (bufferedBodyClient{inner: &recordingClient{}}).Do(req); err == nil {
		t.Fatal("short body accepted")
	}
}
