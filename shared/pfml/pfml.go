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
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/massgov/bulk-user-import/shared/logging"
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
)

// EmailConflictError says that another PFML user already holds the email.
type EmailConflictError struct {
	UserID string // the other user's user_id
	HasSub bool   // whether that user has a Cognito sub at all
	Email  string
	Sub    string // the sub Cognito gave for the email
}

func (e *EmailConflictError) Error() string {
	other := "has no Cognito sub, not the sub of"
	if e.HasSub {
		other = "has a different Cognito sub than"
	}
	return fmt.Sprintf("email %s already belongs to PFML user %s, which %s Cognito user %s",
		logging.MaskEmail(e.Email), e.UserID, other, e.Sub)
}

// Employer is the part of an employer row the import needs.
type Employer struct {
	ID               string
	FEIN             string
	FineosEmployerID *int64
}

// LeaveAdmin is the state of a (user, employer) link after EnsureLeaveAdmin.
type LeaveAdmin struct {
	UserID      string
	EmployerID  string
	LinkID      string
	FineosWebID string // on the link row: the pair is registered in FINEOS
	PlannedID   string // decided for the FINEOS call when FineosWebID is empty
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

// EmployerByFEIN returns the one employer with that FEIN.
func (s *Store) EmployerByFEIN(ctx context.Context, fein string) (Employer, error) {
	rows, err := s.pool.Query(ctx, `SELECT employer_id::text, employer_fein, fineos_employer_id FROM employer WHERE employer_fein = $1 LIMIT 2`, fein)
	if err != nil {
		return Employer{}, fmt.Errorf("find employer: %w", err)
	}
	emps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Employer, error) {
		var e Employer
		return e, r.Scan(&e.ID, &e.FEIN, &e.FineosEmployerID)
	})
	if err != nil {
		return Employer{}, fmt.Errorf("find employer: %w", err)
	}
	switch len(emps) {
	case 0:
		return Employer{}, ErrEmployerNotFound
	case 1:
		return emps[0], nil
	default:
		return Employer{}, ErrEmployerAmbiguous
	}
}

// stamp returns the timestamp columns and values for an insert into table.
func (s *Store) stamp(table string) (cols, vals string) {
	if s.ts[table] {
		return ", created_at, updated_at", ", now(), now()"
	}
	return "", ""
}

// EnsureLeaveAdmin makes sure, in one transaction, that the user with the
// Cognito sub exists with the email, has the Employer role and is linked to
// the employer. With planFineos and no FINEOS web id on the link yet, it
// also decides the web id for the FINEOS call (once: every retry gets the
// same one). A user row holding the email under another sub is an
// *EmailConflictError, and nothing is written.
func (s *Store) EnsureLeaveAdmin(ctx context.Context, sub, email, employerID string, planFineos bool) (LeaveAdmin, error) {
	uc, uv := s.stamp("user")
	rc, rv := s.stamp("link_user_role")
	lc, lv := s.stamp("link_user_leave_administrator")
	la := LeaveAdmin{EmployerID: employerID}
	var linkWebID, plannedID *string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO "user" (user_id, sub_id, email_address`+uc+`) VALUES ($1, $2, $3`+uv+`) ON CONFLICT DO NOTHING`,
			uuid.NewString(), sub, email)
		b.Queue(`INSERT INTO link_user_role (user_id, role_id`+rc+`)
			SELECT user_id, $2`+rv+` FROM "user" WHERE sub_id = $1 ON CONFLICT DO NOTHING`, sub, EmployerRoleID)
		b.Queue(`INSERT INTO link_user_leave_administrator (user_leave_administrator_id, user_id, employer_id`+lc+`)
			SELECT $2, user_id, $3`+lv+` FROM "user" WHERE sub_id = $1 ON CONFLICT (user_id, employer_id) DO NOTHING`,
			sub, uuid.NewString(), employerID)
		if planFineos {
			b.Queue(`INSERT INTO bulk_import_fineos_user (user_id, employer_id, fineos_web_id)
				SELECT u.user_id, $2, $3 FROM "user" u
				JOIN link_user_leave_administrator l ON l.user_id = u.user_id AND l.employer_id = $2
				WHERE u.sub_id = $1 AND l.fineos_web_id IS NULL
				ON CONFLICT (user_id, employer_id) DO NOTHING`, sub, employerID, FineosWebIDPrefix+uuid.NewString())
		}
		b.Queue(`SELECT u.user_id::text, l.user_leave_administrator_id::text, l.fineos_web_id, f.fineos_web_id
			FROM "user" u
			JOIN link_user_leave_administrator l ON l.user_id = u.user_id AND l.employer_id = $2
			LEFT JOIN bulk_import_fineos_user f ON f.user_id = u.user_id AND f.employer_id = $2
			WHERE u.sub_id = $1`, sub, employerID).QueryRow(func(row pgx.Row) error {
			return row.Scan(&la.UserID, &la.LinkID, &linkWebID, &plannedID)
		})
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return s.emailConflict(ctx, tx, sub, email)
			}
			return fmt.Errorf("ensure leave admin: %w", err)
		}
		return nil
	})
	if err != nil {
		return LeaveAdmin{}, err
	}
	if linkWebID != nil {
		la.FineosWebID = *linkWebID
	} else if plannedID != nil {
		la.PlannedID = *plannedID
	}
	return la, nil
}

// emailConflict explains why no user row with the sub exists after the
// insert: another row holds the email.
func (s *Store) emailConflict(ctx context.Context, tx pgx.Tx, sub, email string) error {
	var userID string
	var otherSub *string
	err := tx.QueryRow(ctx, `SELECT user_id::text, sub_id FROM "user" WHERE email_address = $1`, email).Scan(&userID, &otherSub)
	if err != nil {
		return fmt.Errorf("ensure leave admin: user with sub %s neither inserted nor found: %w", sub, err)
	}
	return &EmailConflictError{UserID: userID, HasSub: otherSub != nil, Email: email, Sub: sub}
}

// RecordFineosWebID stores the web id on the link after FINEOS accepted it.
func (s *Store) RecordFineosWebID(ctx context.Context, userID, employerID, webID string) error {
	set := "fineos_web_id = $3"
	if s.ts["link_user_leave_administrator"] {
		set += ", updated_at = now()"
	}
	b := &pgx.Batch{}
	b.Queue(`UPDATE link_user_leave_administrator SET `+set+` WHERE user_id = $1 AND employer_id = $2 AND fineos_web_id IS NULL`,
		userID, employerID, webID)
	b.Queue(`UPDATE bulk_import_fineos_user SET registered_at = coalesce(registered_at, now()) WHERE user_id = $1 AND employer_id = $2`,
		userID, employerID)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("record FINEOS web id: %w", err)
	}
	return nil
}
