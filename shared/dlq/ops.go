package dlq

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"golang.org/x/time/rate"

	"github.com/massgov/bulk-user-import/shared/consume"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/queue"
	"github.com/massgov/bulk-user-import/shared/retry"
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
	Rows     int     `json:"rows"`   // distinct rows among the matching messages (those without a row count one each)
	Groups   []Group `json:"groups"` // largest first
}

// List groups the messages that match by error code, with up to samples
// examples each. It consumes nothing.
func (t *Tool) List(ctx context.Context, f Filter, samples int) (Listing, error) {
	groups := map[string]*Group{}
	var l Listing
	rows := map[string]bool{}
	pass, err := t.scan(ctx, func(_ context.Context, batch []Entry) (map[string]bool, bool, error) {
		for _, e := range batch {
			if !f.Match(e) {
				continue
			}
			l.Matching++
			if k := e.key(); k == "" || !rows[k] {
				l.Rows++
				rows[k] = k != ""
			}
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
	Moved      int            `json:"moved"`      // sent to the import queue and deleted here (or would be, dry run)
	Skipped    int            `json:"skipped"`    // not matching, or not replayable; left in place
	Later      int            `json:"later"`      // dead-lettered after the pass began (its own moves failing again among them): left for the next pass
	Duplicates int            `json:"duplicates"` // extra copies of a moved row's dead letter, deleted
	Errors     int            `json:"errors"`     // matching but not moved; left in place
	ByCode     map[string]int `json:"moved_by_code"`
	Notes      []string       `json:"notes,omitempty"` // why messages were skipped or not moved
}

// duplicateMargin: a second dead letter of a moved row older than the
// pass by this much is a copy (SQS stored a send twice, or an interrupted
// replay left it), deleted; a younger one is left, in case clocks differ.
const duplicateMargin = time.Minute

// Replay moves the matching messages back to the import queue: for each
// batch it returns the rows to queued (with a replay count), sends the
// messages, and deletes from the dead-letter queue those the import queue
// accepted. Malformed messages are replayed only when asked for by code.
//
// A pass moves each row at most once, and only messages that were in the
// dead-letter queue when it began: every message it sends carries the
// pass's id, which the worker keeps on a dead letter, and a message SQS
// got after the pass began waits for the next pass. So a row that fails
// again while the pass runs stays in the dead-letter queue, once. Extra
// copies of a moved row's dead letter are deleted.
func (t *Tool) Replay(ctx context.Context, o ReplayOptions) (ReplayResult, error) {
	res := ReplayResult{ByCode: map[string]int{}}
	begin := time.Now()
	pass := newPassID()
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
	moved := map[string]Entry{}  // by row: the message moved
	held := map[string][]Entry{} // by row: messages held, not moved
	isCopy := func(e, of Entry) bool {
		return e.sentAt.Before(begin.Add(-duplicateMargin)) ||
			e.sentAt.Before(begin) && e.FailedAt == of.FailedAt && e.Code == of.Code && e.Error == of.Error
	}
	p, err := t.scan(ctx, func(ctx context.Context, batch []Entry) (map[string]bool, bool, error) {
		removed := map[string]bool{}
		var move, copies []Entry
		for _, e := range batch {
			first, done := moved[e.key()]
			switch {
			case e.pass == pass || !e.sentAt.Before(begin):
				res.Later++
			case done && e.key() != "" && isCopy(e, first):
				copies = append(copies, e)
			case done && e.key() != "":
				res.Later++ // the row's newer dead letter: the next pass
			case !o.Match(e):
				res.Skipped++
				held[e.key()] = append(held[e.key()], e)
			case e.Code == consume.CodeMalformedMessage && o.Code != consume.CodeMalformedMessage:
				res.Skipped++
				note("malformed messages are not replayed unless asked for with --error " + consume.CodeMalformedMessage)
			case o.Limit > 0 && res.Moved+len(move) >= o.Limit:
				res.Skipped++
				held[e.key()] = append(held[e.key()], e)
			case e.key() != "" && slices.ContainsFunc(move, func(m Entry) bool { return m.key() == e.key() }):
				copies = append(copies, e) // two copies in one batch: move one
			default:
				move = append(move, e)
			}
		}
		if o.DryRun {
			for _, e := range move {
				res.Moved++
				res.ByCode[e.Code]++
				moved[e.key()] = e
			}
			res.Duplicates += len(copies)
			return nil, o.Limit > 0 && res.Moved >= o.Limit, nil
		}
		for len(move) > 0 {
			n := 1
			if limiter == nil {
				n = len(move)
			} else if err := limiter.Wait(ctx); err != nil {
				return removed, false, err
			}
			done, err := t.move(ctx, move[:n], pass, &res, note)
			for _, e := range done {
				removed[e.ID] = true
				if k := e.key(); k != "" {
					moved[k] = e
					// Copies of its dead letter seen earlier in the pass.
					for _, c := range held[k] {
						if isCopy(c, e) {
							copies = append(copies, c)
						}
					}
					delete(held, k)
				}
			}
			if err != nil {
				return removed, false, err
			}
			move = move[n:]
		}
		for id := range t.deleteCopies(ctx, copies, &res, note) {
			removed[id] = true
		}
		return removed, o.Limit > 0 && res.Moved >= o.Limit, nil
	})
	res.Pass = p
	return res, err
}

// deleteCopies deletes extra copies of moved rows' dead letters and
// returns the ids deleted.
func (t *Tool) deleteCopies(ctx context.Context, copies []Entry, res *ReplayResult, note func(string)) map[string]bool {
	removed := map[string]bool{}
	for len(copies) > 0 {
		n := min(len(copies), queue.MaxBatchEntries)
		batch := copies[:n]
		copies = copies[n:]
		handles := make([]string, len(batch))
		for i, e := range batch {
			handles[i] = e.handle
		}
		failed, err := t.DLQ.DeleteBatch(ctx, handles)
		if err != nil {
			note("could not delete extra copies of dead letters (a later pass does): " + err.Error())
			continue
		}
		bad := map[string]bool{}
		for _, f := range failed {
			bad[f.ID] = true
		}
		for i, e := range batch {
			if !bad[strconv.Itoa(i)] {
				removed[e.ID] = true
				res.Duplicates++
			}
		}
	}
	return removed
}

// newPassID names a replay pass.
func newPassID() string {
	b := make([]byte, 8)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}

// move replays some messages and returns those deleted from the DLQ.
func (t *Tool) move(ctx context.Context, batch []Entry, pass string, res *ReplayResult, note func(string)) ([]Entry, error) {
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
		entries = append(entries, queue.Entry{ID: id, Body: e.body, Attributes: map[string]string{consume.AttrReplayPass: pass}})
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
	var sent []Entry
	var handles []string
	for _, e := range pending {
		sent = append(sent, e)
		handles = append(handles, e.handle)
	}
	// Sent: delete here, retrying, so that the row's dead letter, should it
	// fail again, is its only one.
	var dfailed []queue.EntryError
	err = retry.Do(ctx, retry.DefaultPolicy, func(err error) bool { return !retry.IsContextError(err) }, func() (err error) {
		dfailed, err = t.DLQ.DeleteBatch(ctx, handles)
		return err
	}, nil)
	if err != nil {
		// Sent but not deleted: the messages stay here too; a later pass
		// deletes them as copies. Report them as not moved.
		res.Errors += len(handles)
		note("delete from the dead-letter queue failed (the messages were sent; a later pass removes the copies): " + err.Error())
		return nil, nil
	}
	notDeleted := map[int]bool{}
	for _, f := range dfailed {
		i, _ := strconv.Atoi(f.ID)
		notDeleted[i] = true
		res.Errors++
		note("a message was sent but not deleted here: " + f.Error())
	}
	var removed []Entry
	for i, e := range sent {
		if notDeleted[i] {
			continue
		}
		res.Moved++
		res.ByCode[e.Code]++
		removed = append(removed, e)
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
