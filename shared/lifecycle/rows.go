package lifecycle

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/massgov/bulk-user-import/shared/jobs"
)

// QueueStartAttempt queues, into a batch, recording that a worker received
// the row's message for the receiveCount-th time (attempts only grow: a
// stale redelivery never lowers them) and reading the row as recorded.
// into is filled when the batch is sent, with an empty State when the row
// does not exist. It moves no state and locks only the row.
func (l *Lifecycle) QueueStartAttempt(b *pgx.Batch, jobID string, row int64, receiveCount int, into *jobs.RowInfo) {
	b.Queue(`UPDATE bulk_import_row r SET attempts = greatest(r.attempts, $3), updated_at = now()
		FROM bulk_import_job j
		WHERE r.job_id = $1 AND r.row_no = $2 AND j.job_id = r.job_id
		RETURNING r.state, coalesce(r.email, ''), coalesce(r.fein, ''), j.force_registration, r.attempts,
			coalesce(r.error_code, ''), coalesce(r.error_message, ''), coalesce(r.dead_letter, ''),
			coalesce(extract(epoch FROM now() - r.finished_at), 0)::float8`,
		jobID, row, receiveCount).Query(func(rows pgx.Rows) error {
		got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (jobs.RowInfo, error) {
			var ri jobs.RowInfo
			var failedFor float64
			err := r.Scan(&ri.State, &ri.Email, &ri.FEIN, &ri.ForceRegistration, &ri.Attempts, &ri.ErrorCode, &ri.ErrorMessage, &ri.DeadLetter, &failedFor)
			ri.FailedFor = time.Duration(failedFor * float64(time.Second))
			return ri, err
		})
		if len(got) == 1 {
			*into = got[0]
		}
		return err
	})
}

// QueueSucceed queues, into a batch (a batch is one implicit transaction),
// marking the row succeeded under the job's shared lock. A row that
// failed or was cancelled meanwhile (a duplicate delivery gave up; the job
// was cancelled while the row was being registered) is corrected: it is
// registered, and success is the truth once reached. Such a correction
// after the job's completion was recorded reopens the job, so that it is
// completed again and its files rewritten; a success that changes nothing
// (another delivery of the row succeeded first) reopens nothing. The lock
// comes first: a completion in progress either saw this row's outcome or
// is over before the row changes.
func (l *Lifecycle) QueueSucceed(b *pgx.Batch, jobID string, row int64) {
	queueLock(b, jobID, keyShare)
	b.Queue(`WITH done AS (
			UPDATE bulk_import_row
			SET state = 'succeeded', error_code = NULL, error_message = NULL, finished_at = now(), updated_at = now()
			WHERE job_id = $1 AND row_no = $2 AND state IN ('queued', 'failed', 'cancelled')
			RETURNING 1)
		UPDATE bulk_import_job SET finished_at = NULL, updated_at = now()
		WHERE job_id = $1 AND finished_at IS NOT NULL AND EXISTS (SELECT 1 FROM done)`, jobID, row)
}

// ClaimFailure marks a queued row failed for good with an error code and
// message, its dead letter pending, under the job's shared lock, and
// reports whether this call did: of several deliveries of one row failing
// at once, one claims the failure and sends the one dead letter. Call
// DeadLettered once it is sent.
func (l *Lifecycle) ClaimFailure(ctx context.Context, jobID string, row int64, code, message string) (bool, error) {
	b := &pgx.Batch{}
	queueLock(b, jobID, keyShare)
	var claimed bool
	b.Queue(`UPDATE bulk_import_row
		SET state = 'failed', error_code = $3, error_message = $4, dead_letter = 'pending', finished_at = now(), updated_at = now()
		WHERE job_id = $1 AND row_no = $2 AND state = 'queued'`, jobID, row, code, message).Exec(func(tag pgconn.CommandTag) error {
		claimed = tag.RowsAffected() == 1
		return nil
	})
	if err := l.pool.SendBatch(ctx, b).Close(); err != nil {
		return false, fmt.Errorf("mark job %s row %d failed: %w", jobID, row, err)
	}
	return claimed, nil
}

// DeadLettered records that the failed row's dead letter is in the
// dead-letter queue.
func (l *Lifecycle) DeadLettered(ctx context.Context, jobID string, row int64) error {
	if _, err := l.pool.Exec(ctx, `UPDATE bulk_import_row SET dead_letter = 'sent'
		WHERE job_id = $1 AND row_no = $2 AND state = 'failed' AND dead_letter = 'pending'`, jobID, row); err != nil {
		return fmt.Errorf("mark job %s row %d dead-lettered: %w", jobID, row, err)
	}
	return nil
}

// NoteError records the last (transient) error of a row that will be
// retried; it is a sign of life of the row too.
func (l *Lifecycle) NoteError(ctx context.Context, jobID string, row int64, code, message string) error {
	if _, err := l.pool.Exec(ctx, `UPDATE bulk_import_row SET error_code = $3, error_message = $4, updated_at = now()
		WHERE job_id = $1 AND row_no = $2 AND state = 'queued'`, jobID, row, code, message); err != nil {
		return fmt.Errorf("note error on job %s row %d: %w", jobID, row, err)
	}
	return nil
}

// Touch records a sign of life of a queued row whose message is alive but
// not worked on (handed back while a dependency's breaker is open), at
// most once per every: the maintainer's rescuer must not take it for lost.
func (l *Lifecycle) Touch(ctx context.Context, jobID string, row int64, every time.Duration) error {
	if _, err := l.pool.Exec(ctx, `UPDATE bulk_import_row SET updated_at = now()
		WHERE job_id = $1 AND row_no = $2 AND state = 'queued' AND updated_at < now() - $3 * interval '1 second'`,
		jobID, row, every.Seconds()); err != nil {
		return fmt.Errorf("touch job %s row %d: %w", jobID, row, err)
	}
	return nil
}

// MarkRowsSent records that the rows' messages were accepted by the queue
// for the first time.
func (l *Lifecycle) MarkRowsSent(ctx context.Context, jobID string, rows []int64) error {
	if len(rows) == 0 {
		return nil
	}
	if _, err := l.pool.Exec(ctx, `UPDATE bulk_import_row SET sent_at = now() WHERE job_id = $1 AND row_no = ANY($2) AND sent_at IS NULL`, jobID, rows); err != nil {
		return fmt.Errorf("mark rows of job %s sent: %w", jobID, err)
	}
	return nil
}

// MarkResent records, under the job's shared lock and before they are
// sent again, that the rows' messages are re-sent: the send time is now,
// the re-sends are counted and the attempts start again (they are those of
// the new message). Only rows still queued are marked; it returns them.
// The rows of a cancelled or pruned job are not re-sent (jobs.ErrCancelled,
// jobs.ErrPruned).
func (l *Lifecycle) MarkResent(ctx context.Context, jobID string, rows []int64) ([]int64, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	var marked []int64
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		s, err := lockJob(ctx, tx, jobID, keyShare)
		if err != nil {
			return err
		}
		if err := refuse(jobID, s); err != nil {
			return err
		}
		r, err := tx.Query(ctx, `UPDATE bulk_import_row SET sent_at = now(), resends = resends + 1, attempts = 0, updated_at = now()
			WHERE job_id = $1 AND row_no = ANY($2) AND state = 'queued' RETURNING row_no`, jobID, rows)
		if err != nil {
			return err
		}
		marked, err = pgx.CollectRows(r, pgx.RowTo[int64])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("mark rows of job %s re-sent: %w", jobID, err)
	}
	return marked, nil
}

// Requeued is a row a replay returned to queued: its state and attempts
// before, so that the replay can be undone if its message is not sent.
type Requeued struct {
	Row      int64
	State    string
	Attempts int
	Finished *time.Time
}

// Requeue returns rows to queued before their messages are replayed from
// the dead-letter queue, counting the replay, starting their attempts
// again (the replayed message's receives are new ones), and reopens the
// job (its completion is recorded again once every row is final). Rows
// already succeeded, rejected, duplicate, cancelled or purged are left
// alone; rows of a cancelled job too (jobs.ErrCancelled), and of a pruned
// one (jobs.ErrPruned). The job's row is locked first, as a completion
// locks it, so a job is never completed with rows queued by a replay.
func (l *Lifecycle) Requeue(ctx context.Context, jobID string, rows []int64) ([]Requeued, error) {
	var out []Requeued
	err := l.transition(ctx, jobID, func(tx pgx.Tx, s state) error {
		if err := refuse(jobID, s); err != nil {
			return err
		}
		r, err := tx.Query(ctx, `WITH prev AS (
				SELECT row_no, state, attempts, finished_at FROM bulk_import_row
				WHERE job_id = $1 AND row_no = ANY($2) AND state IN ('failed', 'queued') AND purged_at IS NULL FOR UPDATE)
			UPDATE bulk_import_row r SET state = 'queued', attempts = 0, replays = replays + 1, dead_letter = NULL,
				finished_at = NULL, updated_at = now()
			FROM prev WHERE r.job_id = $1 AND r.row_no = prev.row_no
			RETURNING r.row_no, prev.state, prev.attempts, prev.finished_at`, jobID, rows)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(r, func(r pgx.CollectableRow) (Requeued, error) {
			var q Requeued
			return q, r.Scan(&q.Row, &q.State, &q.Attempts, &q.Finished)
		})
		if err != nil || len(out) == 0 {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE bulk_import_job SET finished_at = NULL, updated_at = now() WHERE job_id = $1`, jobID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("requeue rows of job %s: %w", jobID, err)
	}
	return out, nil
}

// Unrequeue undoes Requeue for rows whose replayed message was not sent:
// each goes back to the state and attempts it had (a failed row's dead
// letter is still in the dead-letter queue), unless a worker changed it
// meanwhile. It returns the rows restored.
func (l *Lifecycle) Unrequeue(ctx context.Context, jobID string, rows []Requeued) (int64, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	nos, states, attempts, finished := make([]int64, len(rows)), make([]string, len(rows)), make([]int32, len(rows)), make([]*time.Time, len(rows))
	for i, r := range rows {
		nos[i], states[i], attempts[i], finished[i] = r.Row, r.State, int32(r.Attempts), r.Finished
	}
	var n int64
	err := l.transition(ctx, jobID, func(tx pgx.Tx, _ state) error {
		tag, err := tx.Exec(ctx, `UPDATE bulk_import_row r SET state = u.state, attempts = greatest(r.attempts, u.attempts),
				replays = r.replays - 1, finished_at = u.finished_at, updated_at = now(),
				dead_letter = CASE WHEN u.state = 'failed' THEN 'sent' END
			FROM unnest($2::bigint[], $3::text[], $4::integer[], $5::timestamptz[]) AS u(row_no, state, attempts, finished_at)
			WHERE r.job_id = $1 AND r.row_no = u.row_no AND r.state = 'queued' AND r.attempts = 0`, jobID, nos, states, attempts, finished)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("undo the requeue of rows of job %s: %w", jobID, err)
	}
	return n, nil
}

// Purge marks rows failed for good: their dead-letter messages are being
// deleted and they will not be replayed. Rows still queued (their messages
// were moved by SQS after a worker died on every attempt) fail with code.
func (l *Lifecycle) Purge(ctx context.Context, jobID string, rows []int64, code string) (int64, error) {
	var n int64
	err := l.transition(ctx, jobID, func(tx pgx.Tx, _ state) error {
		tag, err := tx.Exec(ctx, `UPDATE bulk_import_row
			SET state = 'failed', purged_at = now(), dead_letter = NULL, updated_at = now(), finished_at = coalesce(finished_at, now()),
			    error_code = coalesce(error_code, $3),
			    error_message = coalesce(error_message || ' ', '') || '(purged from the dead-letter queue: not retried)'
			WHERE job_id = $1 AND row_no = ANY($2) AND state IN ('failed', 'queued') AND purged_at IS NULL`, jobID, rows, code)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("purge rows of job %s: %w", jobID, err)
	}
	return n, nil
}
