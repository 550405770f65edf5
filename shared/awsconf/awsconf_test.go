package awsconf

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// countQuotaErrors fires many failing calls at once through a client of cfg
// and counts those that ended with the SDK's "retry quota exceeded".
func countQuotaErrors(t *testing.T, cfg aws.Config) int {
	t.Helper()
	api := SQS(cfg)
	var mu sync.Mutex
	n := 0
	var wg sync.WaitGroup
	for range 300 {
		wg.Go(func() {
			_, err := api.GetQueueUrl(context.Background(), &sqs.GetQueueUrlInput{QueueName: aws.String("q")})
			var qe ratelimit.QuotaExceededError
			if errors.As(err, &qe) {
				mu.Lock()
				n++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return n
}

func TestManyGoroutinesCannotDrainTheRetryQuota(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte(`{"__type":"InternalError","message":"boom"}`))
	}))
	defer srv.Close()
	opts := []func(*config.LoadOptions) error{
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("a", "b", "")),
		config.WithBaseEndpoint(srv.URL),
	}
	ours, err := Load(context.Background(), "us-east-1", opts...)
	if err != nil {
		t.Fatal(err)
	}
	if n := countQuotaErrors(t, ours); n != 0 {
		t.Fatalf("%d calls failed with retry quota exceeded", n)
	}
	// The SDK's default retryer does drain it: the test can fail.
	plain, err := config.LoadDefaultConfig(context.Background(), append(opts, config.WithRegion("us-east-1"))...)
	if err != nil {
		t.Fatal(err)
	}
	if n := countQuotaErrors(t, plain); n == 0 {
		t.Fatal("the default retryer did not run out of quota: this test proves nothing")
	}
}
