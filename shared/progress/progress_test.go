package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		done, total int64
		bar         bool
		want        string
	}{
		{50, 100, false, "rows  50% 50/100 x"},
		{0, 0, false, "rows 0 x"},
		{250000, 1000000, false, "rows  25% 250k/1.00M x"},
		{100, 100, true, "rows [==============================] 100% 100/100 x"},
		{10, 100, true, "rows [===>                          ]  10% 10/100 x"},
	}
	for _, tt := range tests {
		if got := Line("rows", tt.done, tt.total, "x", tt.bar); got != tt.want {
			t.Errorf("Line(%d, %d, %v) = %q, want %q", tt.done, tt.total, tt.bar, got, tt.want)
		}
	}
}

func TestPlainOutputIsOneLinePerInterval(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	b := New(&buf, false, time.Hour)
	for i := int64(1); i <= 1000; i++ {
		b.Update("sending", i, 1000, "")
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	// The first update, then nothing until the interval, then the final one.
	if len(lines) != 2 || !strings.Contains(lines[1], "100% 1000/1000") || strings.Contains(buf.String(), "\r") {
		t.Fatalf("plain output:\n%s", buf.String())
	}
}

func TestTerminalOutputRedrawsInPlace(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	b := New(&buf, true, time.Hour)
	b.Update("reading", 1, 10, "")
	b.Update("reading", 10, 10, "")
	b.Done()
	out := buf.String()
	if strings.Count(out, "\r") != 2 || !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
		t.Fatalf("terminal output %q", out)
	}
}
