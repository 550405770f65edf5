package lifecycle_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/massgov/bulk-user-import/shared/clock"
	"github.com/massgov/bulk-user-import/shared/events"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
)

// shiftedClock is the system clock moved forward by shift: a process that
// was stopped and finds its time has passed.
type shiftedClock struct {
	clock.Clock
	shift atomic.Int64
}

func (c *shiftedClock) Now() time.Time { return c.Clock.Now().Add(time.Duration(c.shift.Load())) }

// claimOld makes the job's event claim look older than any lease, as
// time passing would.
func (f fixture) claimOld(t *testing.T, job string) {
	t.Helper()
	if _, err := f.stack.Pool.Exec(context.Background(), `UPDATE bulk_import_job SET event_claimed_at = now() - interval '1 hour' WHERE job_id = $1`, job); err != nil {
		t.Fatal(err)
	}
}

// An announcer stopped between its claim and its publish, past its lease,
// is taken over; when it resumes it must not publish what its successor
// did.
func TestAnAnnouncerStoppedBeforeItsPublishDoesNotPublishAfterItsSuccessor(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.completed(t, "stopped")
	f.writeResults(t)
	stopped, sp := f.announcer(t)
	clk := &shiftedClock{Clock: clock.OrReal(nil)}
	stopped.Clock = clk
	other, _ := f.announcer(t)
	out, err := stopped.PublishEventStalled(context.Background(), func() {
		clk.shift.Store(int64(2 * stopped.EventLease))
		f.claimOld(t, "stopped")
		publish(t, other, lifecycle.EventPublished)
	})
	if err != nil || out != lifecycle.EventReleased {
		t.Fatalf("the resumed announcer: %v, %v; want released", out, err)
	}
	if n := sp.called.Load(); n != 0 {
		t.Errorf("the resumed announcer published %d times after its claim could have been taken over", n)
	}
	if got := f.received(t, 1); len(got["stopped/1"]) != 1 || len(got) != 1 {
		t.Fatalf("received %v, want stopped/1 once", got)
	}
}

// hookPublisher runs hook, then fails transiently.
type hookPublisher struct{ hook func() }

func (hookPublisher) Destination() string { return "hook" }
func (p hookPublisher) Publish(context.Context, events.Event) error {
	p.hook()
	return errors.New("injected: timeout")
}

// A publish of completion 1 that fails after the job completed again must
// not hold completion 2's event back, nor show completion 1's error.
func TestAnOldCompletionsFailureDoesNotDelayTheNextOne(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.record(t, "late", 2, jobs.Limits{})
	f.succeed(t, "late", 1)
	if _, err := f.lc.ClaimFailure(ctx, "late", 2, "EMPLOYER_NOT_FOUND", "no employer"); err != nil {
		t.Fatal(err)
	}
	f.lc.Finish(ctx, "late")
	f.writeResults(t)
	a, _ := f.announcer(t)
	a.Events = hookPublisher{hook: func() {
		// While completion 1 is being published, a replay completes the job again.
		if _, err := f.lc.Requeue(ctx, "late", []int64{2}); err != nil {
			t.Error(err)
		}
		f.succeed(t, "late", 2)
		f.lc.Finish(ctx, "late")
		f.writeResults(t)
	}}
	publish(t, a, lifecycle.EventFailed)
	st := f.status(t, "late")
	if st.EventID != "late/2" || st.EventFailures != 0 || st.EventError != "" || st.EventRetryAt != nil {
		t.Fatalf("completion 2's event carries completion 1's failure: id %s, failures %d, error %q, retry at %v", st.EventID, st.EventFailures, st.EventError, st.EventRetryAt)
	}
	b, _ := f.announcer(t)
	publish(t, b, lifecycle.EventPublished)
	if got := f.received(t, 1); len(got["late/2"]) != 1 || len(got) != 1 {
		t.Fatalf("received %v, want late/2 once", got)
	}
}

// refusingBus is a destination that refuses every event for good.
type refusingBus struct{ calls atomic.Int64 }

func (*refusingBus) Destination() string { return "eventbridge:refusing" }
func (b *refusingBus) Publish(context.Context, events.Event) error {
	b.calls.Add(1)
	return &events.PermanentError{Err: errors.New("AccessDeniedException: injected")}
}

// With two destinations, one refusing, the retries go to the refusing one
// only: the healthy one gets the event once.
func TestARetryPublishesOnlyToTheDestinationsThatFailed(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.completed(t, "multi")
	f.writeResults(t)
	lc, sp := f.announcer(t)
	bus := &refusingBus{}
	lc.Events = events.Multi{sp, bus}
	for range 3 {
		publish(t, lc, lifecycle.EventFailed)
		f.eventDue(t, "multi")
	}
	if n := bus.calls.Load(); n != 3 {
		t.Errorf("the refusing destination was tried %d times, want 3", n)
	}
	st := f.status(t, "multi")
	if st.Event != jobs.EventFailing || st.EventFailures != 3 {
		t.Errorf("status: event %s, failures %d; want failing, 3", st.Event, st.EventFailures)
	}
	if got := f.received(t, 1); len(got["multi/1"]) != 1 || len(got) != 1 {
		t.Fatalf("received %v, want multi/1 once on the healthy destination", got)
	}
}

// Every destination refusing: the failure is recorded (nothing delivered
// yet), and retried.
func TestEveryDestinationRefusingIsRecordedAsAFailure(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.completed(t, "refused")
	f.writeResults(t)
	lc, _ := f.announcer(t)
	lc.Events = events.Multi{&refusingBus{}, &refusingBus{}}
	publish(t, lc, lifecycle.EventFailed)
	if st := f.status(t, "refused"); st.Event != jobs.EventFailing || st.EventFailures != 1 {
		t.Fatalf("status: event %s, failures %d; want failing, 1", st.Event, st.EventFailures)
	}
}
