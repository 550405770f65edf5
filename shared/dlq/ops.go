package dlq

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"golang.org/x/time/rate"

	"github.com/massgov/bulk-user-import/shared/consume"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/queue"
)

// Group is the messages of one error code.
type Group struct {
	Code    string  `json:"error_code"`
	Count   int     `json:"count"`
	Samples []Entry `json:"samples"`
}

// Listing is what List found.
type Listing struct {
	Pass
	Matching int     `json:"matching"`
	Groups   []Group `json:"groups"` // largest first
}

// List groups the messages that match by error code, with up to samples
// examples each. It consumes nothing.
func (t *Tool) List(ctx context.Context, f Filter, samples int) (Listing, error) {
	groups := map[string]*Group{}
	var l Listing
	pass, err := t.scan(ctx, func(_ context.Context, batch []Entry) (map[string]bool, bool, error) {
		for _, e := range batch {
			if !f.Match(e) {
				continue
			}
			l.Matching++
			g := groups[e.Code]
			if g == nil {
				g = &Group{Code: e.Code}
				groups[e.Code] = g
			}
			g.Count++
			if len(g.Samples) < samples {
				g.Samples = append(g.Samples, e)
			}
		}
		return nil, false, nil
	})
	l.Pass = pass
	for _, code := range slices.Sorted(maps.Keys(groups)) {
		l.Groups = append(l.Groups, *groups[code])
	}
	slices.SortStableFunc(l.Groups, func(a, b Group) int { return b.Count - a.Count })
	return l, err
}

// ReplayOptions select and pace a replay.
type ReplayOptions struct {
	Filter
	Limit  int     // move at most this many (0: all)
	Rate   float64 // move at most this many per second (0: no limit)
	DryRun bool    // count what would move; move nothing
}

// ReplayResult counts what a replay did.
type ReplayResult struct {
	Pass
	Moved   int            `json:"moved"`   // sent to the import queue and deleted here (or would be, dry run)
	Skipped int            `json:"skipped"` // not matching, or not replayable; left in place
	Errors  int            `json:"errors"`  // matching but not moved; left in place
	ByCode  map[string]int `json:"moved_by_code"`
	Notes   []string       `json:"notes,omitempty"` // why messages were skipped or not moved
}

// Replay moves the matching messages back to the import queue: for each
// batch it returns the rows to queued (with a replay count), sends the
// messages, and deletes from the dead-letter queue those the import queue
// accepted. Malformed messages are replayed only when asked for by code.
func (t *Tool) Replay(ctx context.Context, o ReplayOptions) (ReplayResult, error) {
	res := ReplayResult{ByCode: map[string]int{}}
	var limiter *rate.Limiter
	if o.Rate > 0 {
		limiter = rate.NewLimiter(rate.Limit(o.Rate), 1)
	}
	notes := map[string]bool{}
	note := func(s string) {
		if !notes[s] {
			notes[s] = true
			res.Notes = append(res.Notes, s)
		}
	}
	pass, err := t.scan(ctx, func(ctx context.Context, batch []Entry) (map[string]bool, bool, error) {
		var move []Entry
		for _, e := range batch {
			switch {
			case !o.Match(e):
				res.Skipped++
			case e.Code == consume.CodeMalformedMessage && o.Code != consume.CodeMalformedMessage:
				res.Skipped++
				note("malformed messages are not replayed unless asked for with --error " + consume.CodeMalformedMessage)
			case o.Limit > 0 && res.Moved+len(move) >= o.Limit:
				res.Skipped++
			default:
				move = append(move, e)
			}
		}
		if o.DryRun {
			for _, e := range move {
				res.Moved++
				res.ByCode[e.Code]++
			}
			return nil, o.Limit > 0 && res.Moved >= o.Limit, nil
		}
		removed := map[string]bool{}
		for len(move) > 0 {
			n := 1
			if limiter == nil {
				n = len(move)
			} else if err := limiter.Wait(ctx); err != nil {
				return removed, false, err
			}
			moved, err := t.move(ctx, move[:n], &res, note)
			for _, id := range moved {
				removed[id] = true
			}
			if err != nil {
				return removed, false, err
			}
			move = move[n:]
		}
		return removed, o.Limit > 0 && res.Moved >= o.Limit, nil
	})
	res.Pass = pass
	return res, err
}

// move replays some messages and returns the ids deleted from the DLQ.
func (t *Tool) move(ctx context.Context, batch []Entry, res *ReplayResult, note func(string)) ([]string, error) {
	// The rows first: a crash after this leaves rows queued with their
	// messages still here, and a second replay moves them.
	byJob := map[string][]int64{}
	for _, e := range batch {
		if e.Job != "" && e.Row > 0 {
			byJob[e.Job] = append(byJob[e.Job], e.Row)
		}
	}
	skipJob := map[string]bool{}
	for job, rows := range byJob {
		if _, err := t.Jobs.Requeue(ctx, job, rows); err != nil {
			if errors.Is(err, jobs.ErrCancelled) || errors.Is(err, jobs.ErrJobNotFound) || errors.Is(err, jobs.ErrPruned) {
				skipJob[job] = true
				note(err.Error() + ": its messages are not replayed")
				continue
			}
			return nil, err
		}
	}
	var entries []queue.Entry
	pending := map[string]Entry{}
	for i, e := range batch {
		if skipJob[e.Job] {
			res.Skipped++
			continue
		}
		id := strconv.Itoa(i)
		pending[id] = e
		entries = append(entries, queue.Entry{ID: id, Body: e.body})
	}
	if len(entries) == 0 {
		return nil, nil
	}
	failed, err := t.Main.SendBatch(ctx, entries)
	if err != nil {
		res.Errors += len(entries)
		note("send to the import queue failed: " + err.Error())
		return nil, nil
	}
	for _, f := range failed {
		delete(pending, f.ID)
		res.Errors++
		note("the import queue refused a message: " + f.Error())
	}
	var handles, ids []string
	for _, e := range pending {
		handles = append(handles, e.handle)
		ids = append(ids, e.ID)
	}
	dfailed, err := t.DLQ.DeleteBatch(ctx, handles)
	if err != nil {
		// Sent but not deleted: the messages stay here too, duplicates the
		// worker absorbs. Report them as not moved.
		res.Errors += len(handles)
		note("delete from the dead-letter queue failed (the messages were sent; a later replay sends them again, harmlessly): " + err.Error())
		return nil, nil
	}
	notDeleted := map[string]bool{}
	for _, f := range dfailed {
		i, _ := strconv.Atoi(f.ID)
		notDeleted[ids[i]] = true
		res.Errors++
		note("a message was sent but not deleted here: " + f.Error())
	}
	var removed []string
	for _, e := range pending {
		if notDeleted[e.ID] {
			continue
		}
		res.Moved++
		res.ByCode[e.Code]++
		removed = append(removed, e.ID)
	}
	return removed, nil
}

// PurgeResult counts what a purge did.
type PurgeResult struct {
	Pass
	Deleted    int            `json:"deleted"`
	RowsFailed int64          `json:"rows_failed"`
	ByCode     map[string]int `json:"deleted_by_code"`
}

// Purge deletes the job's messages for good and marks their rows failed
// for good. Without yes it only counts them.
func (t *Tool) Purge(ctx context.Context, jobID string, yes bool) (PurgeResult, error) {
	if jobID == "" {
		return PurgeResult{}, fmt.Errorf("purge needs a job")
	}
	res := PurgeResult{ByCode: map[string]int{}}
	pass, err := t.scan(ctx, func(ctx context.Context, batch []Entry) (map[string]bool, bool, error) {
		var mine []Entry
		for _, e := range batch {
			if e.Job == jobID {
				mine = append(mine, e)
			}
		}
		if !yes || len(mine) == 0 {
			for _, e := range mine {
				res.Deleted++
				res.ByCode[e.Code]++
			}
			return nil, false, nil
		}
		byCode := map[string][]int64{}
		for _, e := range mine {
			byCode[e.Code] = append(byCode[e.Code], e.Row)
		}
		for code, rows := range byCode {
			n, err := t.Jobs.Purge(ctx, jobID, rows, code)
			if err != nil {
				return nil, false, err
			}
			res.RowsFailed += n
		}
		handles := make([]string, len(mine))
		for i, e := range mine {
			handles[i] = e.handle
		}
		failed, err := t.DLQ.DeleteBatch(ctx, handles)
		if err != nil {
			return nil, false, fmt.Errorf("delete from the dead-letter queue: %w", err)
		}
		bad := map[string]bool{}
		for _, f := range failed {
			bad[f.ID] = true
		}
		removed := map[string]bool{}
		for i, e := range mine {
			if bad[strconv.Itoa(i)] {
				continue
			}
			removed[e.ID] = true
			res.Deleted++
			res.ByCode[e.Code]++
		}
		return removed, false, nil
	})
	res.Pass = pass
	return res, err
}
