// Package pfml reads and writes the PFML tables the import touches: the
// employer (read only), the user, its Employer role, and the leave
// administrator link between a user and an employer.
//
// Every write is create-or-get with INSERT ... ON CONFLICT, so the same row
// registered twice, or by two workers at once, leaves one user, one role
// link and one leave administrator link.
package pfml

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/shared/mask"
)

// EmployerRoleID is lk_role's Employer role.
const EmployerRoleID = 3

// FineosWebIDPrefix starts every FINEOS web id PFML creates.
const FineosWebIDPrefix = "pfml_leave_admin_"

// Errors.
var (
	ErrEmployerNotFound  = errors.New("no employer has this FEIN")
	ErrEmployerAmbiguous = errors.New("several employers have this FEIN")
	ErrSchema            = errors.New("the PFML tables lack columns the import writes")
	// ErrEmailHeld says a batch stopped because another user row holds
	// the email it registers; EmailConflict says which.
	ErrEmailHeld = errors.New("another user row holds the email")
)

// EmailConflictError says that another PFML user already holds the email.
type EmailConflictError struct {
	UserID string // the other user's user_id
	HasSub bool   // whether that user has a Cognito sub at all
	Email  string
}

func (e *EmailConflictError) Error() string {
	other := "has no Cognito sub, not that of"
	if e.HasSub {
		other = "has a different Cognito sub than"
	}
	return fmt.Sprintf("email %s already belongs to PFML user %s, which %s the Cognito user of the email",
		mask.Email(e.Email), e.UserID, other)
}

// Employer is the part of an employer row the import needs.
type Employer struct {
	ID               string
	FEIN             string
	FineosEmployerID *int64
}

// LeaveAdmin is a (user, employer) link after QueueEnsureLeaveAdmin.
type LeaveAdmin struct {
	UserID      string
	EmployerID  string
	LinkID      string
	FineosWebID string // on the link row: the pair is registered in FINEOS
}

// Store accesses the PFML tables.
type Store struct {
	pool *pgxpool.Pool
	ts   map[string]bool // tables that carry created_at and updated_at
}

// NewStore checks that the PFML tables have the columns the import uses and
// notes which carry timestamps, so that inserts fill them.
func NewStore(ctx context.Context, pool *pgxpool.Pool) (*Store, error) {
	required := map[string][]string{
		"employer":                      {"employer_id", "employer_fein", "fineos_employer_id"},
		"user":                          {"user_id", "sub_id", "email_address"},
		"link_user_role":                {"user_id", "role_id"},
		"link_user_leave_administrator": {"user_leave_administrator_id", "user_id", "employer_id", "fineos_web_id"},
	}
	rows, err := pool.Query(ctx, `SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = ANY($1)`,
		[]string{"employer", "user", "link_user_role", "link_user_leave_administrator"})
	if err != nil {
		return nil, fmt.Errorf("inspect PFML tables: %w", err)
	}
	have := map[string]map[string]bool{}
	var table, column string
	if _, err := pgx.ForEachRow(rows, []any{&table, &column}, func() error {
		if have[table] == nil {
			have[table] = map[string]bool{}
		}
		have[table][column] = true
		return nil
	}); err != nil {
		return nil, fmt.Errorf("inspect PFML tables: %w", err)
	}
	var missing []string
	for t, cols := range required {
		for _, c := range cols {
			if !have[t][c] {
				missing = append(missing, t+"."+c)
			}
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: %s (is this the PFML database? for development run the dev schema)", ErrSchema, strings.Join(missing, ", "))
	}
	ts := map[string]bool{}
	for t := range required {
		ts[t] = have[t]["created_at"] && have[t]["updated_at"]
	}
	return &Store{pool: pool, ts: ts}, nil
}

// writes lists the privileges the registration uses.
var writes = []struct{ table, privilege string }{
	{"employer", "SELECT"},
	{`"user"`, "SELECT"}, {`"user"`, "INSERT"},
	{"link_user_role", "SELECT"}, {"link_user_role", "INSERT"},
	{"link_user_leave_administrator", "SELECT"}, {"link_user_leave_administrator", "INSERT"}, {"link_user_leave_administrator", "UPDATE"},
	{"bulk_import_row", "SELECT"}, {"bulk_import_row", "UPDATE"},
	{"bulk_import_fineos_plan", "SELECT"}, {"bulk_import_fineos_plan", "INSERT"}, {"bulk_import_fineos_plan", "UPDATE"},
}

// CheckWritable tells whether the import can write again: the server is
// not read-only (a replica, a failover in progress) and the user holds the
// privileges the registration uses. It names what is missing.
func (s *Store) CheckWritable(ctx context.Context) error {
	tables, privs := make([]string, len(writes)), make([]string, len(writes))
	for i, w := range writes {
		tables[i], privs[i] = w.table, w.privilege
	}
	var readOnly bool
	var missing []string
	err := s.pool.QueryRow(ctx, `SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on',
		coalesce((SELECT array_agg(w.p || ' on ' || w.t) FROM unnest($1::text[], $2::text[]) AS w(t, p)
		          WHERE NOT has_table_privilege(w.t, w.p)), '{}')`, tables, privs).Scan(&readOnly, &missing)
	switch {
	case err != nil:
		return fmt.Errorf("check the database: %w", err)
	case readOnly:
		return errors.New("the database is read-only")
	case len(missing) > 0:
		return fmt.Errorf("the database user lacks %s", strings.Join(missing, ", "))
	}
	return nil
}

// Send sends a batch of statements queued by the Queue methods (of this
// store and of the jobs store, on the same database) in one round trip and
// one implicit transaction: all of it happens, or none. A user row that
// holds the email under another sub comes back as ErrEmailHeld.
func (s *Store) Send(ctx context.Context, b *pgx.Batch) error {
	err := s.pool.SendBatch(ctx, b).Close()
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "P0001" && pe.Message == emailHeldMessage {
		return fmt.Errorf("%w: %w", ErrEmailHeld, err)
	}
	return err
}

// Lookup is what the first round trip of a row learns, before any side
// effect: the employers with the FEIN, the user row holding the email (if
// any) with its link to the employer, and the planned FINEOS web id.
type Lookup struct {
	Employers []Employer // none, one, or two when the FEIN is ambiguous
	PlannedID string     // with planning and an employer known to FINEOS
	User      *ExistingUser
}

// ExistingUser is the user row that holds an email.
type ExistingUser struct {
	UserID      string
	Sub         *string // nil: the row has no Cognito sub
	FineosWebID string  // on its link to the employer; "" when none or no link
}

// Conflict returns the *EmailConflictError of an existing user row whose
// sub is not the given one (nil when it is).
func (u *ExistingUser) Conflict(email, sub string) error {
	if u.Sub != nil && *u.Sub == sub {
		return nil
	}
	return &EmailConflictError{UserID: u.UserID, HasSub: u.Sub != nil, Email: email}
}

// Employer returns the one employer found.
func (l *Lookup) Employer() (Employer, error) {
	switch len(l.Employers) {
	case 0:
		return Employer{}, ErrEmployerNotFound
	case 1:
		return l.Employers[0], nil
	default:
		return Employer{}, ErrEmployerAmbiguous
	}
}

// QueueLookup queues the reads of the first round trip: the employers with
// the FEIN, the user row holding the email and its link's web id, and,
// with planFineos, the FINEOS web id of (email, employer), decided now
// (once: every retry gets the same one) so that it is stored before FINEOS
// is ever called.
func (s *Store) QueueLookup(b *pgx.Batch, email, fein string, planFineos bool) *Lookup {
	l := &Lookup{}
	b.Queue(`SELECT u.user_id::text, u.sub_id, coalesce(l.fineos_web_id, '') FROM "user" u
		LEFT JOIN link_user_leave_administrator l ON l.user_id = u.user_id
		      AND l.employer_id = (SELECT employer_id FROM employer WHERE employer_fein = $2 LIMIT 1)
		WHERE u.email_address = $1`, email, fein).Query(func(rows pgx.Rows) error {
		users, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ExistingUser, error) {
			var u ExistingUser
			return u, r.Scan(&u.UserID, &u.Sub, &u.FineosWebID)
		})
		if len(users) == 1 {
			l.User = &users[0]
		}
		return err
	})
	b.Queue(`SELECT employer_id::text, employer_fein, fineos_employer_id FROM employer WHERE employer_fein = $1 LIMIT 2`, fein).
		Query(func(rows pgx.Rows) error {
			emps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Employer, error) {
				var e Employer
				return e, r.Scan(&e.ID, &e.FEIN, &e.FineosEmployerID)
			})
			l.Employers = emps
			return err
		})
	if planFineos {
		b.Queue(`INSERT INTO bulk_import_fineos_plan (email, employer_id, fineos_web_id)
			SELECT $1, employer_id, $3 FROM employer WHERE employer_fein = $2 AND fineos_employer_id IS NOT NULL
			ON CONFLICT (email, employer_id) DO NOTHING`, email, fein, FineosWebIDPrefix+uuid.NewString())
		b.Queue(`SELECT p.fineos_web_id FROM bulk_import_fineos_plan p JOIN employer e USING (employer_id)
			WHERE p.email = $1 AND e.employer_fein = $2 ORDER BY p.created_at LIMIT 1`, email, fein).
			Query(func(rows pgx.Rows) error {
				ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if len(ids) > 0 {
					l.PlannedID = ids[0]
				}
				return err
			})
	}
	return l
}

// QueueEnsureLeaveAdmin queues, for the user with the Cognito sub: its row
// with the email, its Employer role and its link to the employer, all
// create-or-get. If another user row holds the email, Send fails with an
// *EmailConflictError and nothing of the batch is written. The returned
// LeaveAdmin is filled when the batch is sent; its FineosWebID is that of
// the link (the pair is registered in FINEOS when it is set).
func (s *Store) QueueEnsureLeaveAdmin(b *pgx.Batch, sub, email, employerID string) *LeaveAdmin {
	uc, uv := s.stamp("user")
	rc, rv := s.stamp("link_user_role")
	lc, lv := s.stamp("link_user_leave_administrator")
	la := &LeaveAdmin{EmployerID: employerID}
	b.Queue(`INSERT INTO "user" (user_id, sub_id, email_address`+uc+`) VALUES ($1, $2, $3`+uv+`) ON CONFLICT DO NOTHING`,
		uuid.NewString(), sub, email)
	b.Queue(`SELECT bulk_import_require(EXISTS (SELECT 1 FROM "user" WHERE sub_id = $1), $2)`, sub, emailHeldMessage)
	b.Queue(`INSERT INTO link_user_role (user_id, role_id`+rc+`)
		SELECT user_id, $2`+rv+` FROM "user" WHERE sub_id = $1 ON CONFLICT DO NOTHING`, sub, EmployerRoleID)
	b.Queue(`INSERT INTO link_user_leave_administrator (user_leave_administrator_id, user_id, employer_id`+lc+`)
		SELECT $2, user_id, $3`+lv+` FROM "user" WHERE sub_id = $1 ON CONFLICT (user_id, employer_id) DO NOTHING`,
		sub, uuid.NewString(), employerID)
	b.Queue(`SELECT u.user_id::text, l.user_leave_administrator_id::text, coalesce(l.fineos_web_id, '')
		FROM "user" u JOIN link_user_leave_administrator l ON l.user_id = u.user_id AND l.employer_id = $2
		WHERE u.sub_id = $1`, sub, employerID).QueryRow(func(row pgx.Row) error {
		return row.Scan(&la.UserID, &la.LinkID, &la.FineosWebID)
	})
	return la
}

// QueueRecordFineosWebID queues storing the web id on the link of the user
// with the sub, once FINEOS accepted it; a web id already there is kept.
func (s *Store) QueueRecordFineosWebID(b *pgx.Batch, sub, email, employerID, webID string) {
	set := "fineos_web_id = $3"
	if s.ts["link_user_leave_administrator"] {
		set += ", updated_at = now()"
	}
	b.Queue(`UPDATE link_user_leave_administrator SET `+set+`
		WHERE user_id = (SELECT user_id FROM "user" WHERE sub_id = $1) AND employer_id = $2 AND fineos_web_id IS NULL`,
		sub, employerID, webID)
	b.Queue(`UPDATE bulk_import_fineos_plan SET registered_at = coalesce(registered_at, now()) WHERE email = $1 AND employer_id = $2`,
		email, employerID)
}

// stamp returns the timestamp columns and values for an insert into table.
func (s *Store) stamp(table string) (cols, vals string) {
	if s.ts[table] {
		return ", created_at, updated_at", ", now(), now()"
	}
	return "", ""
}

// emailHeldMessage is the error raised when a user row holds the email
// under another sub. It names no email: the server logs its errors.
const emailHeldMessage = "bulk_import: the email is held by another user row"

// EmailConflict explains an email conflict (Send's ErrEmailHeld for the
// email): which user row holds the email, as an *EmailConflictError.
func (s *Store) EmailConflict(ctx context.Context, email string) error {
	var userID string
	var otherSub *string
	err := s.pool.QueryRow(ctx, `SELECT user_id::text, sub_id FROM "user" WHERE email_address = $1`, email).Scan(&userID, &otherSub)
	if err != nil {
		return &EmailConflictError{Email: email, UserID: "(unknown: " + err.Error() + ")"}
	}
	return &EmailConflictError{UserID: userID, HasSub: otherSub != nil, Email: email}
}
