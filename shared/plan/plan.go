// Package plan tells what an import of some sources would do against
// today's data, without changing anything: it reads the sources as an
// import does (split.DryRunRows: the same validation and de-duplication),
// looks the rows' employers, users and links up in the PFML database in
// read-only transactions, and the rows' emails up in Cognito
// (AdminGetUser, paced by the caller's client), and decides each row with
// the registration's own decisions (register.CheckEmployer,
// register.CheckUser, register.CheckCognitoUser), so that a plan and an
// import cannot drift apart. It never sends a message, writes a row, or
// creates or changes a Cognito or FINEOS user.
package plan

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/massgov/bulk-user-import/shared/cognito"
	"github.com/massgov/bulk-user-import/shared/mask"
	"github.com/massgov/bulk-user-import/shared/pfml"
	"github.com/massgov/bulk-user-import/shared/register"
	"github.com/massgov/bulk-user-import/shared/source"
	"github.com/massgov/bulk-user-import/shared/split"
)

// Finder looks an email's Cognito user up without changing anything;
// *cognito.Client is one.
type Finder interface {
	Find(ctx context.Context, email string) (cognito.User, bool, error)
}

var _ Finder = (*cognito.Client)(nil)

// Defaults.
const (
	DefaultMaxLines    = 20
	DefaultConcurrency = 8
	// batchSize bounds the values of one = ANY($1) lookup.
	batchSize = 5000
	// maxRejectLines is how many rejected rows the dry run keeps, for
	// their line numbers.
	maxRejectLines = 1000
)

// Options of a plan.
type Options struct {
	Sources           []string
	ForceRegistration bool
	MaxLines          int // line numbers listed per category (DefaultMaxLines when 0)
	Concurrency       int // Cognito lookups in flight (DefaultConcurrency when 0)
}

// Planner makes plans. Cognito's pacing (the fleet's read budget) is the
// client's.
type Planner struct {
	Opener  source.Opener
	DB      *pgxpool.Pool
	Cognito Finder
}

// Problem kinds of an employer.
const (
	EmployerNotFound        = "not_found"
	EmployerAmbiguous       = "ambiguous"
	EmployerWithoutFineosID = "without_fineos_id"
)

// Lines lists where rows are: "file:line", at most the plan's MaxLines,
// and how many more there are.
type Lines struct {
	Rows  int64    `json:"rows"`
	Lines []string `json:"lines"`
	More  int64    `json:"more_lines,omitempty"`
}

func (l *Lines) add(src string, line, max int) {
	l.Rows++
	if len(l.Lines) < max {
		l.Lines = append(l.Lines, src+":"+strconv.Itoa(line))
	} else {
		l.More++
	}
}

// Reason is a count of rows by code, with their lines.
type Reason struct {
	Code string `json:"code"`
	Lines
}

// Employer is an employer of the sources the import cannot register
// (some of) its rows with. FEIN is masked.
type Employer struct {
	FEIN    string `json:"fein"`
	Problem string `json:"problem"`
	// Fails says whether its rows would fail: an employer without a FINEOS
	// id fails them with --force-registration only.
	Fails bool `json:"rows_fail"`
	Lines
}

// Source is one source as read.
type Source struct {
	Source     string `json:"source"`
	Rows       int64  `json:"rows"`
	Rejected   int64  `json:"rejected"`
	Duplicates int64  `json:"duplicates"`
	Accepted   int64  `json:"accepted"`
	Skipped    bool   `json:"skipped,omitempty"` // named twice
	Error      string `json:"error,omitempty"`   // refused (masked)
}

// Calls counts the requests the import would send, by budget name.
type Calls struct {
	CognitoGet      int64 `json:"cognito_get"`
	CognitoCreate   int64 `json:"cognito_create"`
	CognitoPassword int64 `json:"cognito_password"`
	Fineos          int64 `json:"fineos"`
}

// Report is a plan.
type Report struct {
	ForceRegistration bool     `json:"force_registration"`
	Sources           []Source `json:"sources"`

	Rows       int64 `json:"rows"`
	Rejected   int64 `json:"rejected"`
	Duplicates int64 `json:"duplicates"`
	Accepted   int64 `json:"accepted"` // rows an import would send
	// Refused counts the sources refused as a whole (an import refuses
	// them too, and exits 1).
	Refused int `json:"refused_sources"`

	RejectedByReason []Reason `json:"rejected_by_reason"`
	WouldSucceed     int64    `json:"would_succeed"`
	WouldFail        int64    `json:"would_fail"`
	FailuresByCode   []Reason `json:"failures_by_code"`

	// People, by distinct email. The Cognito counts are of the emails
	// that reach Cognito (a row whose employer is missing never does).
	Emails              int `json:"emails"`
	CognitoExisting     int `json:"cognito_existing"`
	CognitoNew          int `json:"cognito_new"`
	CognitoNotReached   int `json:"cognito_not_reached"`
	PFMLUsersExisting   int `json:"pfml_users_existing"`
	PFMLUsersNew        int `json:"pfml_users_new"`
	EmailConflicts      int `json:"email_conflicts"`
	LinksExisting       int `json:"links_existing"`
	LinksNew            int `json:"links_new"`
	FineosRegistered    int `json:"fineos_registered"` // links registered in FINEOS already (force registration)
	EmployersNotFound   int `json:"employers_not_found"`
	EmployersAmbiguous  int `json:"employers_ambiguous"`
	EmployersNoFineosID int `json:"employers_without_fineos_id"`
	// Employers lists the employers above (masked FEINs), most rows first.
	Employers []Employer `json:"employers"`

	// Calls the import would make; CognitoCalls is the sum of Cognito's.
	Calls        Calls `json:"calls"`
	CognitoCalls int64 `json:"cognito_calls"`
	// CognitoLookups is how many AdminGetUser requests this plan sent.
	CognitoLookups int64 `json:"cognito_lookups"`

	Estimate
}

// Fails says whether an import of the sources would leave rows rejected
// or failed.
func (r *Report) Fails() bool { return r.Rejected > 0 || r.WouldFail > 0 }

// row is an accepted row and what is decided of it.
type row struct {
	split.Accepted
	lookup pfml.Lookup
	emp    pfml.Employer
	fail   string // the failure code, "" while none
}

// snapshot is what the database says of the rows.
type snapshot struct {
	employers map[string][]pfml.Employer // by FEIN
	byEmail   map[string]dbUser          // the user row holding each email (one only)
	bySub     map[string]dbUser
	links     map[[2]string]string // (user_id, employer_id): fineos_web_id
}

type dbUser struct {
	ID  string
	Sub *string
}

// Plan reads the sources and tells what an import would do.
func (p *Planner) Plan(ctx context.Context, o Options) (*Report, error) {
	if o.MaxLines <= 0 {
		o.MaxLines = DefaultMaxLines
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	var rows []*row
	dry, err := split.DryRunRows(ctx, p.Opener, o.Sources, maxRejectLines, func(a split.Accepted) {
		rows = append(rows, &row{Accepted: a})
	})
	if err != nil {
		return nil, err
	}
	rep := &Report{ForceRegistration: o.ForceRegistration}
	rep.sources(dry, o.MaxLines)

	snap := snapshot{employers: map[string][]pfml.Employer{}, byEmail: map[string]dbUser{}, bySub: map[string]dbUser{}, links: map[[2]string]string{}}
	if err := readOnly(ctx, p.DB, func(tx pgx.Tx) error { return snap.readRows(ctx, tx, rows) }); err != nil {
		return nil, err
	}

	// Before Cognito: the employer and the user row holding the email, as
	// the registration's first round trip finds them.
	failures := map[string]*Reason{}
	fail := func(r *row, err error) {
		var f *register.Failure
		code := register.CodeInternal
		if errors.As(err, &f) {
			code = f.Code
		}
		r.fail = code
		if failures[code] == nil {
			failures[code] = &Reason{Code: code}
		}
		failures[code].add(r.Source, r.Line, o.MaxLines)
	}
	emails := map[string]bool{} // every email; true: reaches Cognito
	for _, r := range rows {
		emails[r.Email] = emails[r.Email] || false
		r.lookup = snap.lookup(r.Email, r.FEIN)
		emp, err := register.CheckEmployer(&r.lookup, o.ForceRegistration)
		if err != nil {
			fail(r, err)
			continue
		}
		r.emp = emp
		if _, err := register.CheckUser(r.Email, r.lookup.User); err != nil {
			fail(r, err)
			continue
		}
		emails[r.Email] = true
	}
	rep.employers(rows, snap, o)

	found, err := p.lookUp(ctx, emails, o.Concurrency, &rep.CognitoLookups)
	if err != nil {
		return nil, err
	}
	subs := map[string]bool{}
	for email, c := range found {
		if _, ok := snap.byEmail[email]; !ok && c.found {
			subs[c.user.Sub] = true
		}
	}
	rep.Emails = len(emails)
	if len(subs) > 0 {
		if err := readOnly(ctx, p.DB, func(tx pgx.Tx) error { return snap.readSubs(ctx, tx, subs) }); err != nil {
			return nil, err
		}
	}

	// After Cognito: the conflicts, then the user, link and FINEOS
	// registration each row needs.
	users := map[string]bool{}     // email: its PFML user row exists
	passwords := map[string]bool{} // emails whose password the import sets
	conflicts := map[string]bool{} // emails in conflict
	for _, r := range rows {
		if r.fail != "" {
			if r.fail == register.CodeEmailConflict {
				conflicts[r.Email] = true
			}
			continue
		}
		c := found[r.Email]
		if err := register.CheckCognitoUser(r.Email, r.lookup.User, c.user, c.found); err != nil {
			fail(r, err)
			conflicts[r.Email] = true
			rep.Calls.CognitoGet++ // the import looks the user up to find the conflict
			continue
		}
		rep.Calls.CognitoGet++
		if !c.found || c.user.NeedsPassword() {
			passwords[r.Email] = true
		}
		rep.WouldSucceed++
		var userID string
		if u, ok := snap.byEmail[r.Email]; ok {
			userID = u.ID
		} else if u, ok := snap.bySub[c.user.Sub]; ok && c.found {
			userID = u.ID
		}
		users[r.Email] = userID != ""
		webID, linked := snap.links[[2]string{userID, r.emp.ID}]
		if userID != "" && linked {
			rep.LinksExisting++
		} else {
			rep.LinksNew++
		}
		if o.ForceRegistration {
			if userID != "" && linked && webID != "" {
				rep.FineosRegistered++
			} else {
				rep.Calls.Fineos++
			}
		}
	}
	for _, exists := range users {
		if exists {
			rep.PFMLUsersExisting++
		} else {
			rep.PFMLUsersNew++
		}
	}
	for email, reached := range emails {
		c := found[email]
		switch {
		case conflicts[email]:
			// The import creates nothing for it: counted as a conflict.
		case !reached:
			rep.CognitoNotReached++
		case c.found:
			rep.CognitoExisting++
		default:
			rep.CognitoNew++
		}
	}
	rep.EmailConflicts = len(conflicts)
	rep.Calls.CognitoCreate = int64(rep.CognitoNew)
	rep.Calls.CognitoPassword = int64(len(passwords))
	rep.CognitoCalls = rep.Calls.CognitoGet + rep.Calls.CognitoCreate + rep.Calls.CognitoPassword
	for _, f := range failures {
		rep.WouldFail += f.Rows
		rep.FailuresByCode = append(rep.FailuresByCode, *f)
	}
	sortReasons(rep.FailuresByCode)
	return rep, nil
}

// sources fills the counts of the dry run.
func (r *Report) sources(dry split.DryRunResult, maxLines int) {
	for _, s := range dry.Sources {
		src := Source{Source: s.Source, Rows: s.Counts.Rows, Rejected: s.Counts.Rejected, Duplicates: s.Counts.Duplicates,
			Accepted: s.Counts.Accepted, Skipped: s.Skipped}
		if s.Err != nil {
			src.Error = mask.Text(s.Err.Error())
			r.Refused++
		}
		r.Sources = append(r.Sources, src)
		r.Rows += s.Counts.Rows
		r.Rejected += s.Counts.Rejected
		r.Duplicates += s.Counts.Duplicates
		r.Accepted += s.Counts.Accepted
	}
	reasons := map[string]*Reason{}
	for _, rj := range dry.Rejects {
		if reasons[rj.Code] == nil {
			reasons[rj.Code] = &Reason{Code: rj.Code}
		}
		reasons[rj.Code].add(rj.Source, rj.Line, maxLines)
	}
	for code, n := range dry.RejectedByCode {
		rs := reasons[code]
		if rs == nil {
			rs = &Reason{Code: code}
			reasons[code] = rs
		}
		// Rejects beyond those kept: counted, not listed.
		rs.More += n - rs.Rows
		rs.Rows = n
	}
	for _, rs := range reasons {
		r.RejectedByReason = append(r.RejectedByReason, *rs)
	}
	sortReasons(r.RejectedByReason)
}

func sortReasons(rs []Reason) {
	slices.SortFunc(rs, func(a, b Reason) int {
		if a.Rows != b.Rows {
			return int(b.Rows - a.Rows)
		}
		if a.Code < b.Code {
			return -1
		}
		return 1
	})
}

// employers lists the employers whose rows cannot be registered.
func (r *Report) employers(rows []*row, snap snapshot, o Options) {
	byFEIN := map[string]*Employer{}
	var order []string
	for _, rw := range rows {
		var problem string
		emps := snap.employers[rw.FEIN]
		switch {
		case len(emps) == 0:
			problem = EmployerNotFound
		case len(emps) > 1:
			problem = EmployerAmbiguous
		case emps[0].FineosEmployerID == nil:
			problem = EmployerWithoutFineosID
		default:
			continue
		}
		e := byFEIN[rw.FEIN]
		if e == nil {
			e = &Employer{FEIN: mask.FEIN(rw.FEIN), Problem: problem, Fails: problem != EmployerWithoutFineosID || o.ForceRegistration}
			byFEIN[rw.FEIN] = e
			order = append(order, rw.FEIN)
			switch problem {
			case EmployerNotFound:
				r.EmployersNotFound++
			case EmployerAmbiguous:
				r.EmployersAmbiguous++
			default:
				r.EmployersNoFineosID++
			}
		}
		e.add(rw.Source, rw.Line, o.MaxLines)
	}
	for _, f := range order {
		r.Employers = append(r.Employers, *byFEIN[f])
	}
	slices.SortStableFunc(r.Employers, func(a, b Employer) int { return int(b.Rows - a.Rows) })
}

// lookup is the registration's first round trip for a row, from the
// snapshot: the employers with the FEIN, and the user row holding the
// email with its link's web id to the (first) employer.
func (s snapshot) lookup(email, fein string) pfml.Lookup {
	l := pfml.Lookup{Employers: s.employers[fein]}
	if u, ok := s.byEmail[email]; ok {
		eu := &pfml.ExistingUser{UserID: u.ID, Sub: u.Sub}
		if len(l.Employers) > 0 {
			eu.FineosWebID = s.links[[2]string{u.ID, l.Employers[0].ID}]
		}
		l.User = eu
	}
	return l
}

// readRows reads the employers of the rows' FEINs, the user rows of their
// emails and those users' links, in batches.
func (s *snapshot) readRows(ctx context.Context, tx pgx.Tx, rows []*row) error {
	feins, emails := map[string]bool{}, map[string]bool{}
	for _, r := range rows {
		feins[r.FEIN], emails[r.Email] = true, true
	}
	err := batches(keys(feins), func(batch []string) error {
		rs, err := tx.Query(ctx, `SELECT employer_id::text, employer_fein, fineos_employer_id FROM employer WHERE employer_fein = ANY($1)`, batch)
		if err != nil {
			return err
		}
		var e pfml.Employer
		_, err = pgx.ForEachRow(rs, []any{&e.ID, &e.FEIN, &e.FineosEmployerID}, func() error {
			s.employers[e.FEIN] = append(s.employers[e.FEIN], e)
			return nil
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("read the employers: %w", err)
	}
	held := map[string]int{}
	var ids []string
	err = batches(keys(emails), func(batch []string) error {
		rs, err := tx.Query(ctx, `SELECT user_id::text, sub_id, email_address FROM "user" WHERE email_address = ANY($1)`, batch)
		if err != nil {
			return err
		}
		var u dbUser
		var email string
		_, err = pgx.ForEachRow(rs, []any{&u.ID, &u.Sub, &email}, func() error {
			held[email]++
			s.byEmail[email] = u
			ids = append(ids, u.ID)
			return nil
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("read the users: %w", err)
	}
	for email, n := range held {
		if n > 1 { // as the registration's lookup: none found unless one
			delete(s.byEmail, email)
		}
	}
	return s.readLinks(ctx, tx, ids)
}

// readSubs reads the user rows of Cognito users whose email no row holds
// (a row under another spelling of the email), and their links.
func (s *snapshot) readSubs(ctx context.Context, tx pgx.Tx, subs map[string]bool) error {
	var ids []string
	err := batches(keys(subs), func(batch []string) error {
		rs, err := tx.Query(ctx, `SELECT user_id::text, sub_id FROM "user" WHERE sub_id = ANY($1)`, batch)
		if err != nil {
			return err
		}
		var u dbUser
		_, err = pgx.ForEachRow(rs, []any{&u.ID, &u.Sub}, func() error {
			s.bySub[*u.Sub] = u
			ids = append(ids, u.ID)
			return nil
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("read the users by Cognito sub: %w", err)
	}
	return s.readLinks(ctx, tx, ids)
}

func (s *snapshot) readLinks(ctx context.Context, tx pgx.Tx, userIDs []string) error {
	err := batches(userIDs, func(batch []string) error {
		rs, err := tx.Query(ctx, `SELECT user_id::text, employer_id::text, coalesce(fineos_web_id, '')
			FROM link_user_leave_administrator WHERE user_id = ANY($1::uuid[])`, batch)
		if err != nil {
			return err
		}
		var user, emp, web string
		_, err = pgx.ForEachRow(rs, []any{&user, &emp, &web}, func() error {
			s.links[[2]string{user, emp}] = web
			return nil
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("read the leave administrator links: %w", err)
	}
	return nil
}

// cognitoUser is what a lookup found.
type cognitoUser struct {
	user  cognito.User
	found bool
}

// lookUp looks up, concurrently, the Cognito user of every email that
// reaches Cognito; n counts the requests.
func (p *Planner) lookUp(ctx context.Context, emails map[string]bool, concurrency int, n *int64) (map[string]cognitoUser, error) {
	var todo []string
	for e, reached := range emails {
		if reached {
			todo = append(todo, e)
		}
	}
	slices.Sort(todo)
	out := make([]cognitoUser, len(todo))
	var next, count atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range min(concurrency, len(todo)) {
		g.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(todo) {
					return nil
				}
				count.Add(1)
				u, found, err := p.Cognito.Find(gctx, todo[i])
				if err != nil {
					return fmt.Errorf("look up the Cognito user of %s: %w", mask.Email(todo[i]), err)
				}
				out[i] = cognitoUser{user: u, found: found}
			}
		})
	}
	err := g.Wait()
	*n = count.Load()
	if err != nil {
		return nil, err
	}
	m := make(map[string]cognitoUser, len(todo))
	for i, e := range todo {
		m[e] = out[i]
	}
	return m, nil
}

// readOnly runs fn in a read-only transaction, rolled back at its end.
func readOnly(ctx context.Context, pool *pgxpool.Pool, fn func(pgx.Tx) error) error {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin a read-only transaction: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	return fn(tx)
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func batches(all []string, fn func([]string) error) error {
	for start := 0; start < len(all); start += batchSize {
		if err := fn(all[start:min(start+batchSize, len(all))]); err != nil {
			return err
		}
	}
	return nil
}
