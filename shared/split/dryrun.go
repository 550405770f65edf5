package split

import (
	"context"
	"errors"
	"hash/maphash"
	"io"

	"github.com/massgov/bulk-user-import/shared/csvrows"
	"github.com/massgov/bulk-user-import/shared/jobs"
	"github.com/massgov/bulk-user-import/shared/source"
)

// Reject is a row refused by validation, for dry-run output.
type Reject struct {
	Source string
	Line   int
	Code   string
	Reason string
}

// DryRunResult is what a dry run found.
type DryRunResult struct {
	Sources []SourceResult
	Rejects []Reject // the first maxRejects rejected rows
	// RejectedByCode counts the rejected rows of the sources read by
	// their code.
	RejectedByCode map[string]int64
}

// Accepted is a row a dry run accepted: valid and not a duplicate of an
// earlier row of the sources (the rows an import would send).
type Accepted struct {
	Source string
	Line   int
	Email  string // normalised
	FEIN   string // normalised
}

// DryRun reads and validates the sources exactly as Run would, and counts
// rows, rejects and duplicates, without writing or sending anything.
// Duplicates are found with a set of 64-bit hashes of the pairs, so memory
// grows by a few bytes per distinct pair only.
func DryRun(ctx context.Context, opener source.Opener, sources []string, maxRejects int) (DryRunResult, error) {
	return DryRunRows(ctx, opener, sources, maxRejects, nil)
}

// DryRunRows is DryRun that also hands each accepted row of each source
// read (not of a refused one) to accept, when set, after the source was
// read to its end.
func DryRunRows(ctx context.Context, opener source.Opener, sources []string, maxRejects int, accept func(Accepted)) (DryRunResult, error) {
	res := DryRunResult{RejectedByCode: map[string]int64{}}
	seed := maphash.MakeSeed()
	pairs := map[uint64]struct{}{}
	seen := map[string]bool{}
	for _, src := range sources {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		loc, err := source.Parse(src)
		if err != nil {
			res.Sources = append(res.Sources, SourceResult{Source: src, Err: err})
			continue
		}
		sr := SourceResult{Source: loc.String()}
		if seen[sr.Source] {
			sr.Skipped = true
			res.Sources = append(res.Sources, sr)
			continue
		}
		seen[sr.Source] = true
		sr.Counts, sr.Err = dryRunSource(ctx, opener, loc, seed, pairs, &res, maxRejects, accept)
		if sr.Err != nil {
			sr.Counts = jobs.SourceCounts{}
		}
		res.Sources = append(res.Sources, sr)
	}
	return res, nil
}

func dryRunSource(ctx context.Context, opener source.Opener, loc source.Location, seed maphash.Seed,
	pairs map[uint64]struct{}, res *DryRunResult, maxRejects int, accept func(Accepted)) (jobs.SourceCounts, error) {
	var c jobs.SourceCounts
	body, _, err := opener.Open(ctx, loc)
	if err != nil {
		return c, err
	}
	defer body.Close()
	rows, err := csvrows.NewReader(loc.String(), body)
	if err != nil {
		return c, err
	}
	// Pairs of a refused file must not count as seen: collect them apart.
	mine := map[uint64]struct{}{}
	var rejects []Reject
	var accepted []Accepted
	byCode := map[string]int64{}
	for {
		row, err := rows.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return c, err
		}
		c.Rows++
		if row.Reject != nil {
			c.Rejected++
			byCode[row.Reject.Code]++
			if len(res.Rejects)+len(rejects) < maxRejects {
				rejects = append(rejects, Reject{Source: loc.String(), Line: row.Line, Code: row.Reject.Code, Reason: row.Reject.Error()})
			}
			continue
		}
		h := maphash.String(seed, row.Email+"\x00"+row.FEIN)
		_, before := pairs[h]
		_, here := mine[h]
		if before || here {
			c.Duplicates++
			continue
		}
		mine[h] = struct{}{}
		c.Accepted++
		if accept != nil {
			accepted = append(accepted, Accepted{Source: loc.String(), Line: row.Line, Email: row.Email, FEIN: row.FEIN})
		}
	}
	for h := range mine {
		pairs[h] = struct{}{}
	}
	res.Rejects = append(res.Rejects, rejects...)
	for code, n := range byCode {
		res.RejectedByCode[code] += n
	}
	for _, a := range accepted {
		accept(a)
	}
	return c, nil
}
