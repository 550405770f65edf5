package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/massgov/bulk-user-import/localstack/pgtest"
)

// connsSetting is one side of the connections comparison: a server's
// max_connections and the workers' --db-max-conns.
type connsSetting struct {
	label     string
	serverMax int
	args      []string
}

// connsRun is one measured run of a setting.
type connsRun struct {
	setting    int // index in report.connsSettings
	rows       int
	seconds    float64
	peakWorker int // the most connections one worker held at once
	peakFleet  int // the most the workers held together at once
}

func (c connsRun) rate() float64 { return float64(c.rows) / c.seconds }

// benchConns compares the workers' throughput at high concurrency with a
// fixed number of connections each (the default) on a server of 100
// connections, against the same run where each message in flight may hold
// a connection (--db-max-conns concurrency + 4, as workers did) on a
// server that allows them all. Each setting has a private server; the
// runs alternate so that drift of the machine's load affects both.
func benchConns(ctx context.Context, o options, r *report) error {
	unlimited := o.connsWorkers*(o.connsConcurrency+4) + 50
	r.connsSettings = []connsSetting{
		{fmt.Sprintf("one connection per message in flight (`--db-max-conns %d`), `max_connections` %d", o.connsConcurrency+4, unlimited),
			unlimited, []string{"--db-max-conns", strconv.Itoa(o.connsConcurrency + 4)}},
		{"the default `--db-max-conns` (8), `max_connections` 100", 100, nil},
	}
	envs := make([]*env, len(r.connsSettings))
	for i, s := range r.connsSettings {
		srv, err := pgtest.Start("max_connections=" + strconv.Itoa(s.serverMax))
		if err != nil {
			return fmt.Errorf("start a server: %w", err)
		}
		defer srv.Stop()
		e, err := newEnv(ctx, srv.URL)
		if err != nil {
			return err
		}
		defer e.close()
		if err := prepareRows(ctx, e, o); err != nil {
			return err
		}
		envs[i] = e
	}
	dir, err := os.MkdirTemp("", "bui-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fein := func(i int) string { return strconv.Itoa(firstFEIN + i%employers) }
	for rep := range o.connsRepeats {
		for i, s := range r.connsSettings {
			e := envs[i]
			res, err := e.resources(ctx, "conns")
			if err != nil {
				return err
			}
			job := fmt.Sprintf("conns%d-%d-%s", i, rep, suffix())
			path, err := generate(dir, job, o.connsRows, fein)
			if err != nil {
				return err
			}
			log("connections: %d workers x --concurrency %d, %s, %d rows", o.connsWorkers, o.connsConcurrency, s.label, o.connsRows)
			args := append([]string{"--concurrency", strconv.Itoa(o.connsConcurrency),
				"--cognito-get-rate", "0", "--cognito-create-rate", "0", "--cognito-password-rate", "0", "--fineos-rate", "0"}, s.args...)
			sampler := sampleConns(ctx, e)
			wr, err := runWorkers(ctx, e, o, res, job, path, o.connsRows, o.connsWorkers, args)
			perWorker, fleet := sampler()
			if err != nil {
				return err
			}
			r.conns = append(r.conns, connsRun{setting: i, rows: wr.rows, seconds: wr.seconds, peakWorker: perWorker, peakFleet: fleet})
		}
	}
	return nil
}

// sampleConns samples the workers' sessions on e's server every 20 ms
// until the returned stop, which gives the most one worker and all of
// them held at once.
func sampleConns(ctx context.Context, e *env) (stop func() (perWorker, fleet int)) {
	watch := pgtest.WatchWorkerSessions(ctx, e.pool, 20*time.Millisecond)
	return func() (int, int) {
		peaks, fleet := watch()
		return slices.Max(append(slices.Collect(maps.Values(peaks)), 0)), fleet
	}
}

// connsSection reports the comparison: each run, each repeat's ratio
// (the two settings ran one after the other, under the same load), and
// their median and spread.
func (r *report) connsSection(b *strings.Builder) {
	o := r.opts
	fmt.Fprintf(b, "## 5. Database connections\n\n%d workers x `--concurrency %d`, %d new rows per run with force registration, the latencies of section 2, no client-side rate limit; each setting on a private PostgreSQL server of its own, the two settings run one after the other in each of %d repeats. Peak connections are sampled from `pg_stat_activity` every 20 ms (the workers name their sessions `bui worker ROLE ID`).\n\n",
		o.connsWorkers, o.connsConcurrency, o.connsRows, o.connsRepeats)
	fmt.Fprintf(b, "| repeat | setting | rows | seconds | rows/s | peak connections per worker | peak for the fleet |\n|---:|---|---:|---:|---:|---:|---:|\n")
	rates := map[int]map[int]float64{} // repeat -> setting -> rows/s
	for i, c := range r.conns {
		rep := i / max(len(r.connsSettings), 1)
		fmt.Fprintf(b, "| %d | %s | %d | %.1f | %.1f | %d | %d |\n", rep+1, r.connsSettings[c.setting].label, c.rows, c.seconds, c.rate(), c.peakWorker, c.peakFleet)
		if rates[rep] == nil {
			rates[rep] = map[int]float64{}
		}
		rates[rep][c.setting] = c.rate()
	}
	var ratios []float64
	for rep := range len(rates) {
		if u, f := rates[rep][0], rates[rep][1]; u > 0 && f > 0 {
			ratios = append(ratios, f/u)
		}
	}
	if len(ratios) == 0 {
		return
	}
	slices.Sort(ratios)
	med := ratios[len(ratios)/2]
	if len(ratios)%2 == 0 {
		med = (ratios[len(ratios)/2-1] + ratios[len(ratios)/2]) / 2
	}
	pct := make([]string, len(ratios))
	for i, x := range ratios {
		pct[i] = fmt.Sprintf("%.0f%%", 100*x)
	}
	fmt.Fprintf(b, "\nThroughput with the default, fixed connections as a share of that with one connection per message in flight, per repeat: %s; median **%.0f%%** (the target is at least 95%%).\n\n",
		strings.Join(pct, ", "), 100*med)
}
