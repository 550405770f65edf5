package cognito_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	cip "github.com/aws/aws-sdk-go-v2/service/cognitoidentityprovider"

	"github.com/massgov/bulk-user-import/shared/awsconf"
	"github.com/massgov/bulk-user-import/shared/budget"
	"github.com/massgov/bulk-user-import/shared/cognito"
)

// Every attempt of a paced operation, the SDK's retries included, waits
// for a token; throttled attempts are reported; other operations are not
// paced.
func TestPacingCoversEveryAttemptAndReportsThrottles(t *testing.T) {
	t.Parallel()
	var creates, gets atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		switch {
		case strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".AdminCreateUser"):
			if creates.Add(1) <= 2 {
				w.Header().Set("X-Amzn-ErrorType", "TooManyRequestsException")
				w.WriteHeader(http.StatusBadRequest)
				_, _ = io.WriteString(w, `{"__type":"TooManyRequestsException","message":"Too many requests"}`)
				return
			}
			_, _ = io.WriteString(w, `{"User":{"Username":"a@b.co","UserStatus":"FORCE_CHANGE_PASSWORD","Attributes":[{"Name":"sub","Value":"s-1"}]}}`)
		default:
			gets.Add(1)
			_, _ = io.WriteString(w, `{"Username":"a@b.co","UserStatus":"CONFIRMED","UserAttributes":[{"Name":"sub","Value":"s-1"}]}`)
		}
	}))
	defer srv.Close()
	cfg, err := awsconf.Load(context.Background(), "us-east-1",
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("a", "b", "")),
		config.WithBaseEndpoint(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	p := cognito.Pacing{Create: budget.New(budget.CognitoCreate, 0, 5)}
	defer p.Close()
	api := awsconf.Cognito(cfg, p.Option())

	start := time.Now()
	if _, err := api.AdminCreateUser(context.Background(), &cip.AdminCreateUserInput{UserPoolId: aws.String("p"), Username: aws.String("a@b.co")}); err != nil {
		t.Fatal(err)
	}
	// Three attempts at 5/s: tokens at 0, 200 and 400 ms at the earliest.
	if took := time.Since(start); took < 350*time.Millisecond {
		t.Fatalf("three paced attempts took %v", took)
	}
	if st := p.Create.State(); st.Calls != 3 || st.Throttled != 2 || creates.Load() != 3 {
		t.Fatalf("state %+v, server saw %d creates", st, creates.Load())
	}
	start = time.Now()
	for range 50 {
		if _, err := api.AdminGetUser(context.Background(), &cip.AdminGetUserInput{UserPoolId: aws.String("p"), Username: aws.String("a@b.co")}); err != nil {
			t.Fatal(err)
		}
	}
	if gets.Load() != 50 || time.Since(start) > 5*time.Second {
		t.Fatalf("unpaced gets: %d in %v", gets.Load(), time.Since(start))
	}
}
