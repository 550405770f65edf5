package logging

import (
	"context"
	"log/slog"
)

// uniqueKeys is a handler whose lines never carry a key twice: an
// attribute given to a call replaces one of the same name given to With
// (the later one wins, in the earlier one's place). slog's own handlers
// write both, and a JSON consumer then keeps one or rejects the line.
// Attributes are kept until a record is written; a group starts a fresh
// namespace, so the attributes before it are handed to the handler then.
type uniqueKeys struct {
	next  slog.Handler
	attrs []slog.Attr
}

func (h *uniqueKeys) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *uniqueKeys) WithAttrs(as []slog.Attr) slog.Handler {
	return &uniqueKeys{next: h.next, attrs: merge(h.attrs, as)}
}

func (h *uniqueKeys) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &uniqueKeys{next: h.next.WithAttrs(h.attrs).WithGroup(name)}
}

func (h *uniqueKeys) Handle(ctx context.Context, r slog.Record) error {
	as := make([]slog.Attr, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool { as = append(as, a); return true })
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	out.AddAttrs(merge(h.attrs, as)...)
	return h.next.Handle(ctx, out)
}

// merge returns base followed by more, an attribute of more replacing the
// one of the same key (in base or earlier in more). base is not modified.
func merge(base, more []slog.Attr) []slog.Attr {
	out := make([]slog.Attr, 0, len(base)+len(more))
	out = append(out, base...)
	for _, a := range more {
		if a.Key == "" && a.Value.Kind() != slog.KindGroup {
			continue // slog drops empty keys anyway
		}
		replaced := false
		for i := range out {
			if out[i].Key == a.Key && a.Key != "" {
				out[i], replaced = a, true
				break
			}
		}
		if !replaced {
			out = append(out, a)
		}
	}
	return out
}
