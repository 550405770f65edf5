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

	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/lifecycle"
	"github.com/massgov/bulk-user-import/shared/message"
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
// batch it returns the rows to queued (with a replay count, their attempts
// starting again), sends the messages, puts back the rows whose messages
// the import queue did not accept, and deletes from the dead-letter queue
// those it did. Malformed messages are replayed only when asked for by
// code.
//
// A pass moves each row at most once, and only messages that were in the
// dead-letter queue when it began: every message it sends carries the
// pass's id, which the worker keeps on a dead letter, and a message SQS
// got after the pass began waits for the next pass. So a row that fails
// again while the pass runs stays in the dead-letter queue, once. Extra
// copies of a moved row's dead letter are deleted. A message counts as
// moved only once it is deleted here: one sent but not deleted (its
// receipt handle gone stale, a failed delete) is reported as an error.
func (t *Tool) Replay(ctx context.Context, o ReplayOptions) (ReplayResult, error) {
	r := &replay{t: t, o: o, res: ReplayResult{ByCode: map[string]int{}}, begin: time.Now(), pass: newPassID(),
		notes: map[string]bool{}, moved: map[string]Entry{}, held: map[string][]Entry{}}
	if o.Rate > 0 {
		r.limiter = rate.NewLimiter(rate.Limit(o.Rate), 1)
	}
	p, err := t.scan(ctx, r.visit)
	r.res.Pass = p
	return r.res, err
}

// replay is one replay pass.
type replay struct {
	t       *Tool
	o       ReplayOptions
	res     ReplayResult
	begin   time.Time
	pass    string
	limiter *rate.Limiter
	notes   map[string]bool
	moved   map[string]Entry   // by row: the message moved
	held    map[string][]Entry // by row: messages held, not moved
}

// note adds a note once.
func (r *replay) note(s string) {
	if !r.notes[s] {
		r.notes[s] = true
		r.res.Notes = append(r.res.Notes, s)
	}
}

// visit handles one batch of the pass: it sorts the messages, moves those
// to move (or counts them, dry run) and deletes extra copies.
func (r *replay) visit(ctx context.Context, batch []Entry) (map[string]bool, bool, error) {
	move, copies := r.sort(batch)
	if r.o.DryRun {
		for _, e := range move {
			r.res.Moved++
			r.res.ByCode[e.Code]++
			r.moved[e.key()] = e
		}
		r.res.Duplicates += len(copies)
		return nil, r.limitReached(), nil
	}
	removed := map[string]bool{}
	for len(move) > 0 {
		n := len(move)
		if r.limiter != nil {
			n = 1
			if err := r.limiter.Wait(ctx); err != nil {
				return removed, false, err
			}
		}
		done, err := r.move(ctx, move[:n])
		for _, e := range done {
			removed[e.ID] = true
			copies = append(copies, r.remember(e)...)
		}
		if err != nil {
			return removed, false, err
		}
		move = move[n:]
	}
	for id := range r.t.deleteCopies(ctx, copies, &r.res, r.note) {
		removed[id] = true
	}
	return removed, r.limitReached(), nil
}

func (r *replay) limitReached() bool { return r.o.Limit > 0 && r.res.Moved >= r.o.Limit }

// isCopy reports whether e is an extra copy of the dead letter of, moved
// by this pass: SQS got it well before the pass began, or it is the same
// failure.
func (r *replay) isCopy(e, of Entry) bool {
	return e.sentAt.Before(r.begin.Add(-duplicateMargin)) ||
		e.sentAt.Before(r.begin) && e.FailedAt == of.FailedAt && e.Code == of.Code && e.Error == of.Error
}

// sort decides, for each message of a batch, whether it moves, is a copy
// to delete, or stays (counted).
func (r *replay) sort(batch []Entry) (move, copies []Entry) {
	for _, e := range batch {
		first, done := r.moved[e.key()]
		switch {
		case e.pass == r.pass || !e.sentAt.Before(r.begin):
			r.res.Later++
		case done && e.key() != "" && r.isCopy(e, first):
			copies = append(copies, e)
		case done && e.key() != "":
			r.res.Later++ // the row's newer dead letter: the next pass
		case !r.o.Match(e):
			r.res.Skipped++
			r.held[e.key()] = append(r.held[e.key()], e)
		case e.Code == message.CodeMalformedMessage && r.o.Code != message.CodeMalformedMessage:
			r.res.Skipped++
			r.note("malformed messages are not replayed unless asked for with --error " + message.CodeMalformedMessage)
		case r.o.Limit > 0 && r.res.Moved+len(move) >= r.o.Limit:
			r.res.Skipped++
			r.held[e.key()] = append(r.held[e.key()], e)
		case e.key() != "" && slices.ContainsFunc(move, func(m Entry) bool { return m.key() == e.key() }):
			copies = append(copies, e) // two copies in one batch: move one
		default:
			move = append(move, e)
		}
	}
	return move, copies
}

// remember records a moved message and returns the copies of its dead
// letter held earlier in the pass.
func (r *replay) remember(e Entry) (copies []Entry) {
	k := e.key()
	if k == "" {
		return nil
	}
	r.moved[k] = e
	for _, c := range r.held[k] {
		if r.isCopy(c, e) {
			copies = append(copies, c)
		}
	}
	delete(r.held, k)
	return copies
}

// move replays some messages and returns those deleted from the DLQ: the
// pass's hold on them is confirmed first (a message whose hold was lost
// may be another pass's now, and is left), the rows are requeued (a crash
// after this leaves rows queued with their messages still here, and a
// second replay moves them), the messages sent, the rows of those not sent
// put back, and the sent ones deleted here.
func (r *replay) move(ctx context.Context, batch []Entry) ([]Entry, error) {
	batch = r.confirm(ctx, batch)
	requeued, skipJob, err := r.requeue(ctx, batch)
	if err != nil {
		return nil, err
	}
	var send []Entry
	for _, e := range batch {
		if skipJob[e.Job] {
			r.res.Skipped++
			continue
		}
		send = append(send, e)
	}
	sent, unsent := r.send(ctx, send)
	r.undo(ctx, unsent, requeued)
	return r.delete(ctx, sent), nil
}

// confirm renews the pass's hold on the messages to move (their visibility,
// for another --hold) and returns those it still holds. SQS refuses a
// visibility change with a receipt handle that another receive made
// stale, while a delete with it may succeed without deleting anything: so
// the hold is confirmed before the move, not after.
func (r *replay) confirm(ctx context.Context, batch []Entry) []Entry {
	if len(batch) == 0 {
		return nil
	}
	hold, _, _ := r.t.defaults()
	handles := make([]string, len(batch))
	for i, e := range batch {
		handles[i] = e.handle
	}
	failed, err := r.t.DLQ.ChangeVisibilityBatch(ctx, handles, hold)
	if err != nil {
		r.res.Errors += len(batch)
		r.note("could not confirm the pass's hold on messages (they stay in the dead-letter queue): " + err.Error())
		return nil
	}
	lost := map[string]bool{}
	for _, f := range failed {
		lost[f.ID] = true
		r.res.Errors++
		r.note("the pass lost its hold on a message (another pass or consumer received it): not moved")
	}
	var held []Entry
	for i, e := range batch {
		if !lost[strconv.Itoa(i)] {
			held = append(held, e)
		}
	}
	return held
}

// requeue returns the batch's rows to queued, by job; a job that takes no
// replay (cancelled, pruned, unknown) is skipped. On another error the
// rows requeued so far are put back.
func (r *replay) requeue(ctx context.Context, batch []Entry) (map[string][]lifecycle.Requeued, map[string]bool, error) {
	byJob := map[string][]int64{}
	for _, e := range batch {
		if e.Job != "" && e.Row > 0 {
			byJob[e.Job] = append(byJob[e.Job], e.Row)
		}
	}
	requeued := map[string][]lifecycle.Requeued{}
	skipJob := map[string]bool{}
	for _, job := range slices.Sorted(maps.Keys(byJob)) {
		q, err := r.t.Rows.Requeue(ctx, job, byJob[job])
		if err != nil {
			if errors.Is(err, jobs.ErrCancelled) || errors.Is(err, jobs.ErrJobNotFound) || errors.Is(err, jobs.ErrPruned) {
				skipJob[job] = true
				r.note(err.Error() + ": its messages are not replayed")
				continue
			}
			r.putBack(ctx, requeued)
			return nil, nil, err
		}
		requeued[job] = q
	}
	return requeued, skipJob, nil
}

// send sends the messages to the import queue with the pass's mark and
// returns those the queue accepted and those it did not.
func (r *replay) send(ctx context.Context, batch []Entry) (sent, unsent []Entry) {
	if len(batch) == 0 {
		return nil, nil
	}
	entries := make([]queue.Entry, len(batch))
	for i, e := range batch {
		entries[i] = queue.Entry{ID: strconv.Itoa(i), Body: e.body, Attributes: map[string]string{message.AttrReplayPass: r.pass}}
	}
	failed, err := r.t.Main.SendBatch(ctx, entries)
	if err != nil {
		r.res.Errors += len(batch)
		r.note("send to the import queue failed (the messages stay in the dead-letter queue): " + err.Error())
		return nil, batch
	}
	refused := map[string]bool{}
	for _, f := range failed {
		refused[f.ID] = true
		r.res.Errors++
		r.note("the import queue refused a message (it stays in the dead-letter queue): " + f.Error())
	}
	for i, e := range batch {
		if refused[strconv.Itoa(i)] {
			unsent = append(unsent, e)
		} else {
			sent = append(sent, e)
		}
	}
	return sent, unsent
}

// undo puts back the rows of messages that were not sent: they fail again
// as they were, their dead letters still here.
func (r *replay) undo(ctx context.Context, unsent []Entry, requeued map[string][]lifecycle.Requeued) {
	byJob := map[string][]lifecycle.Requeued{}
	for _, e := range unsent {
		for _, q := range requeued[e.Job] {
			if q.Row == e.Row {
				byJob[e.Job] = append(byJob[e.Job], q)
			}
		}
	}
	r.putBack(ctx, byJob)
}

// putBack undoes the requeue of rows, by job, whose messages were not sent.
func (r *replay) putBack(ctx context.Context, byJob map[string][]lifecycle.Requeued) {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for _, job := range slices.Sorted(maps.Keys(byJob)) {
		if _, err := r.t.Rows.Unrequeue(bctx, job, byJob[job]); err != nil {
			// The rows stay queued with their attempts reset: the
			// maintainer re-sends their messages once they are found lost.
			r.note("could not put back the rows of messages not sent (the maintainer re-sends them later): " + err.Error())
		}
	}
}

// delete deletes sent messages here, retrying, so that the row's dead
// letter, should it fail again, is its only one; it returns the messages
// deleted: the ones moved.
func (r *replay) delete(ctx context.Context, sent []Entry) []Entry {
	if len(sent) == 0 {
		return nil
	}
	handles := make([]string, len(sent))
	for i, e := range sent {
		handles[i] = e.handle
	}
	var failed []queue.EntryError
	err := retry.Do(ctx, retry.DefaultPolicy, func(err error) bool { return !retry.IsContextError(err) }, func() (err error) {
		failed, err = r.t.DLQ.DeleteBatch(ctx, handles)
		return err
	}, nil)
	if err != nil {
		// Sent but not deleted: the messages stay here too; a later pass
		// deletes them as copies. Report them as not moved.
		r.res.Errors += len(sent)
		r.note("delete from the dead-letter queue failed (the messages were sent; a later pass removes the copies): " + err.Error())
		return nil
	}
	notDeleted := map[string]bool{}
	for _, f := range failed {
		notDeleted[f.ID] = true
		r.res.Errors++
		if f.Stale() {
			r.note("a message was sent but not deleted here: the pass lost its hold on it (stale receipt handle); it stays in the dead-letter queue as a copy")
		} else {
			r.note("a message was sent but not deleted here: " + f.Error())
		}
	}
	var moved []Entry
	for i, e := range sent {
		if notDeleted[strconv.Itoa(i)] {
			continue
		}
		r.res.Moved++
		r.res.ByCode[e.Code]++
		moved = append(moved, e)
	}
	return moved
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
			n, err := t.Rows.Purge(ctx, jobID, rows, code)
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
