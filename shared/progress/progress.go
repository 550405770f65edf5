// Package progress shows how far a long operation has come: on a terminal
// a bar redrawn in place, otherwise a plain line at a steady interval (so
// that logs collected from a task stay readable).
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Bar reports progress. It is safe for concurrent use.
type Bar struct {
	w        io.Writer
	tty      bool
	interval time.Duration // between plain lines
	redraw   time.Duration // between redraws on a terminal

	mu       sync.Mutex
	last     time.Time
	lastLine string
	drawn    bool // a bar is on the terminal's current line
}

// New returns a bar writing to w. On a terminal (tty) it redraws at most
// ten times a second; otherwise it prints a line every interval.
func New(w io.Writer, tty bool, interval time.Duration) *Bar {
	if interval <= 0 {
		interval = 10 * time.Second
	}
	return &Bar{w: w, tty: tty, interval: interval, redraw: 100 * time.Millisecond}
}

// Update reports done of total (total <= 0: unknown) for label, with a
// free-form note. It only writes when a redraw or a line is due; final
// (done == total) updates are always written.
func (b *Bar) Update(label string, done, total int64, note string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	every := b.interval
	if b.tty {
		every = b.redraw
	}
	final := total > 0 && done >= total
	if !final && now.Sub(b.last) < every {
		return
	}
	b.last = now
	line := Line(label, done, total, note, b.tty)
	if b.tty {
		fmt.Fprintf(b.w, "\r%s\x1b[K", line)
		b.drawn = true
		return
	}
	if line != b.lastLine {
		fmt.Fprintln(b.w, line)
		b.lastLine = line
	}
}

// Done ends the current bar's line on a terminal.
func (b *Bar) Done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tty && b.drawn {
		fmt.Fprintln(b.w)
		b.drawn = false
	}
	b.last = time.Time{}
}

// Line renders one progress line; with bar, a 30-character bar.
func Line(label string, done, total int64, note string, bar bool) string {
	var b strings.Builder
	b.WriteString(label)
	if total > 0 {
		pct := float64(done) / float64(total)
		pct = min(max(pct, 0), 1)
		if bar {
			const width = 30
			full := int(pct * width)
			b.WriteString(" [" + strings.Repeat("=", full))
			if full < width {
				b.WriteString(">" + strings.Repeat(" ", width-full-1))
			}
			b.WriteString("]")
		}
		fmt.Fprintf(&b, " %3.0f%% %s/%s", 100*pct, count(done), count(total))
	} else {
		fmt.Fprintf(&b, " %s", count(done))
	}
	if note != "" {
		b.WriteString(" " + note)
	}
	return b.String()
}

// count formats large numbers readably: 1234567 -> 1.23M.
func count(n int64) string {
	switch {
	case n >= 10_000_000:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 1_000_000:
		return fmt.Sprintf("%.2fM", float64(n)/1e6)
	case n >= 100_000:
		return fmt.Sprintf("%.0fk", float64(n)/1e3)
	default:
		return fmt.Sprint(n)
	}
}
