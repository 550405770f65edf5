package retry

import (
	"testing"
	"time"
)

func TestAScheduleWithoutJitterDoublesExactlyUpToItsMax(t *testing.T) {
	t.Parallel()
	const s = time.Second
	tests := []struct {
		name     string
		schedule Schedule
		want     []time.Duration // delays 1, 2, 3, ...
	}{
		{"doubles to the max", Schedule{Initial: s, Max: 30 * s}, []time.Duration{s, 2 * s, 4 * s, 8 * s, 16 * s, 30 * s, 30 * s}},
		{"a max that is a step", Schedule{Initial: 2 * s, Max: 16 * s}, []time.Duration{2 * s, 4 * s, 8 * s, 16 * s, 16 * s}},
		{"a first step above the max is the max", Schedule{Initial: time.Hour, Max: 10 * time.Minute}, []time.Duration{10 * time.Minute, 10 * time.Minute}},
		{"initial equal to max", Schedule{Initial: s, Max: s}, []time.Duration{s, s, s}},
		{"zero", Schedule{}, []time.Duration{0, 0, 0}},
		{"zero initial stays zero", Schedule{Max: s}, []time.Duration{0, 0}},
		{"sub-second steps", Schedule{Initial: 300 * time.Millisecond, Max: s}, []time.Duration{300 * time.Millisecond, 600 * time.Millisecond, s, s}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := tt.schedule.BackOff()
			for i, want := range tt.want {
				if got := tt.schedule.Nth(i + 1); got != want {
					t.Errorf("Nth(%d) = %s, want %s", i+1, got, want)
				}
				if got := b.NextBackOff(); got != want {
					t.Errorf("NextBackOff #%d = %s, want %s", i+1, got, want)
				}
			}
			b.Reset()
			if got := b.NextBackOff(); got != tt.want[0] {
				t.Errorf("after Reset: %s, want %s", got, tt.want[0])
			}
		})
	}
}

func TestNthCountsFromOneAndStaysAtTheMaxForAnyN(t *testing.T) {
	t.Parallel()
	s := Schedule{Initial: 5 * time.Second, Max: 10 * time.Minute}
	for _, n := range []int{-1, 0, 1} {
		if got := s.Nth(n); got != 5*time.Second {
			t.Errorf("Nth(%d) = %s, want 5s", n, got)
		}
	}
	for _, n := range []int{8, 9, 64, 1000, 1 << 30} {
		if got := s.Nth(n); got != 10*time.Minute {
			t.Errorf("Nth(%d) = %s, want 10m", n, got)
		}
	}
	// A step the size of an hour doubles far past any Duration without
	// overflowing.
	huge := Schedule{Initial: time.Hour, Max: time.Duration(1<<63 - 1)}
	for n := 1; n <= 100; n++ {
		if d := huge.Nth(n); d < time.Hour {
			t.Fatalf("Nth(%d) = %s", n, d)
		}
	}
}

func TestAJitteredDelayIsWithinJitterOfItsStep(t *testing.T) {
	t.Parallel()
	s := Schedule{Initial: time.Second, Max: 8 * time.Second, Jitter: 0.5}
	for n, step := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 10: 8 * time.Second} {
		lo, hi := step/2, step*3/2
		seenLow, seenHigh := false, false
		for range 500 {
			d := s.Nth(n)
			if d < lo || d > hi {
				t.Fatalf("Nth(%d) = %s, want within [%s, %s]", n, d, lo, hi)
			}
			seenLow = seenLow || d < step*3/4
			seenHigh = seenHigh || d > step*5/4
		}
		if !seenLow || !seenHigh {
			t.Errorf("Nth(%d): 500 delays do not spread over [%s, %s]", n, lo, hi)
		}
	}
}
