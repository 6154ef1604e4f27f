package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// scaleQuery is one listing of section 6.
type scaleQuery struct {
	name   string
	status string // "" for any
	deep   bool   // a cursor from the middle of the matching rows
}

var scaleQueries = []scaleQuery{
	{name: "GET /tasks?limit=50"},
	{name: "GET /tasks?limit=50&cursor=(deep)", deep: true},
	{name: "GET /tasks?status=DONE&limit=50", status: "DONE"},
	{name: "GET /tasks?status=DONE&limit=50&cursor=(deep)", status: "DONE", deep: true},
	// A rare status (5% of the rows): where the planner must use the
	// (status, id) index rather than filter the primary key's order.
	{name: "GET /tasks?status=FAILED&limit=50&cursor=(deep)", status: "FAILED", deep: true},
}

// scaleRun is the figures of one query at one table size.
type scaleRun struct {
	load    loadResult
	plan    string        // the plan's scan nodes, from EXPLAIN ANALYZE
	planned time.Duration // EXPLAIN ANALYZE's execution time
}

type scaleSize struct {
	rows   int
	insert time.Duration // bulk insert of the rows added for this size
	vacuum time.Duration
	runs   []scaleRun // in scaleQueries order
}

type scaleResult struct {
	rate  float64
	step  time.Duration
	sizes []scaleSize
}

// scale is section 6: the api binary lists tasks from a table of each size
// in -scale-rows (grown in place: the first size's rows stay the newest),
// at a light fixed rate; every query is also EXPLAINed.
func (b *bench) scale(ctx context.Context, bins *binaries, stops *stopper) (*scaleResult, error) {
	res := &scaleResult{rate: b.o.scaleRate, step: b.o.scaleStep}
	dbURL, err := migrated(ctx, b.o.databaseURL, scaleDB)
	if err != nil {
		return res, err
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return res, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	st, err := b.startStack(ctx, bins, dbURL, 0)
	if err != nil {
		return res, err
	}
	newest := time.Now().UnixMilli()
	have := 0
	for _, rows := range b.o.scaleRows {
		if ctx.Err() != nil {
			break
		}
		size := scaleSize{rows: rows}
		began := time.Now()
		if err := bulkTasks(ctx, conn, newest, have+1, rows); err != nil {
			return res, errors.Join(err, st.stop(ctx))
		}
		size.insert = time.Since(began)
		began = time.Now()
		// What autovacuum would have done by the time a real table got this
		// big: visibility map, hint bits and statistics.
		if _, err := conn.Exec(ctx, "VACUUM ANALYZE tasks"); err != nil {
			return res, errors.Join(err, st.stop(ctx))
		}
		size.vacuum = time.Since(began)
		progress("  %d rows: inserted %d in %s, VACUUM ANALYZE %s", rows, rows-have, size.insert.Round(time.Millisecond), size.vacuum.Round(time.Millisecond))
		have = rows
		for _, q := range scaleQueries {
			run, err := b.scaleQuery(ctx, conn, st.apiURL, q, rows)
			if err != nil {
				return res, errors.Join(fmt.Errorf("%s at %d rows: %w", q.name, rows, err), st.stop(ctx))
			}
			progress("    %s: %s; plan: %s (%s)", q.name, run.load, run.plan, fmtDur(run.planned))
			size.runs = append(size.runs, run)
		}
		res.sizes = append(res.sizes, size)
	}
	stops.stop(func() error { return st.stop(ctx) })
	return res, nil
}

// bulkTasks inserts tasks from..to (1-based; task i is i×500 ms older than
// newestMs) in one INSERT … SELECT: ids are UUIDv7 strings made from each
// task's creation time, so id order is time order as with the real
// generator. 90% are DONE, 5% FAILED, 2% CANCELED, 3% PENDING, with the
// history and result a real worker leaves.
func bulkTasks(ctx context.Context, conn *pgx.Conn, newestMs int64, from, to int) error {
	if to < from {
		return nil
	}
	_, err := conn.Exec(ctx, `
INSERT INTO tasks (`+bareColumns+`)
SELECT
	substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-7' || substr(r, 1, 3) || '-8' || substr(r, 4, 3) || '-' || substr(r, 7, 12),
	'bench ' || i, 'simulate', '{"io_ms": 10}'::jsonb, st,
	CASE WHEN st = 'PENDING' THEN 0 ELSE 1 END, 3, ts, ts + interval '15 ms',
	CASE WHEN st = 'PENDING' THEN NULL ELSE ts + interval '2 ms' END,
	CASE WHEN st IN ('DONE', 'FAILED') THEN ts + interval '15 ms' END,
	CASE WHEN st = 'DONE' THEN '{"digest": "00", "cpu_rounds": 0, "io_ms": 10, "attempt": 1, "cpu_us": 3, "wall_ms": 10}'::jsonb END,
	CASE WHEN st = 'FAILED' THEN 'simulated failure' ELSE '' END,
	ts, NULL, NULL, false,
	CASE WHEN st = 'PENDING' THEN '[]' ELSE
		'[{"number": 1, "worker": "bench-worker-1", "started_at": "' || t || '", "finished_at": "' || t ||
		'", "outcome": "' || CASE st WHEN 'DONE' THEN 'succeeded' WHEN 'FAILED' THEN 'failed' ELSE 'canceled' END || '"}]' END::jsonb
FROM (
	SELECT i, h, r, ts, st, to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t
	FROM (
		SELECT i,
			lpad(to_hex($1::bigint - i * 500), 12, '0') AS h,
			md5(i::text) AS r,
			to_timestamp(($1::bigint - i * 500) / 1000.0) AS ts,
			CASE WHEN i % 100 < 90 THEN 'DONE' WHEN i % 100 < 95 THEN 'FAILED' WHEN i % 100 < 97 THEN 'CANCELED' ELSE 'PENDING' END AS st
		-- Oldest first: ids ascend as the real generator's do.
		FROM generate_series($3::bigint, $2::bigint, -1) AS i
	) g0
) g`, newestMs, from, to)
	if err != nil {
		return fmt.Errorf("bulk insert tasks %d..%d: %w", from, to, err)
	}
	return nil
}

// scaleQuery attacks the API with one listing and EXPLAINs the SQL the
// store runs for it (keyset paging: WHERE id < cursor ORDER BY id DESC
// LIMIT n+1, see bunstore.Store.List).
func (b *bench) scaleQuery(ctx context.Context, conn *pgx.Conn, apiURL string, q scaleQuery, rows int) (scaleRun, error) {
	v := url.Values{"limit": {"50"}}
	var where []string
	if q.status != "" {
		v.Set("status", q.status)
		where = append(where, "status = "+quote(q.status))
	}
	if q.deep {
		// The id halfway down the matching rows: what a client paging from
		// the top would reach after half the table.
		filter := `$1 = ''`
		if q.status != "" {
			filter = `status = $1`
		}
		var after string
		err := conn.QueryRow(ctx, `SELECT id FROM tasks WHERE `+filter+` ORDER BY id DESC
			OFFSET (SELECT count(*) / 2 FROM tasks WHERE `+filter+`) LIMIT 1`, q.status).Scan(&after)
		if err != nil {
			return scaleRun{}, fmt.Errorf("find a deep cursor: %w", err)
		}
		// The API's cursor is the last id, base64url-encoded (httpapi's
		// encodeCursor); a change of format shows as 422s here.
		v.Set("cursor", base64.RawURLEncoding.EncodeToString([]byte(after)))
		where = append(where, "id < "+quote(after))
	}
	target := apiURL + "/tasks?" + v.Encode()
	// One request first: a wrong cursor fails the section, not the figures.
	resp, err := http.Get(target)
	if err != nil {
		return scaleRun{}, err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return scaleRun{}, fmt.Errorf("GET %s: %s", target, resp.Status)
	}
	run := scaleRun{load: attack(ctx, roundRobin(http.MethodGet, []string{target}, nil, nil), b.o.scaleRate, b.o.scaleStep, nil)}

	sql := "SELECT " + bareColumns + " FROM tasks"
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	sql += " ORDER BY id DESC LIMIT 51"
	plan, took, err := explain(ctx, conn, sql)
	if err != nil {
		return run, err
	}
	run.plan, run.planned = plan, took
	return run, nil
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

var execTime = regexp.MustCompile(`Execution Time: ([0-9.]+) ms`)

// explain runs EXPLAIN (ANALYZE, BUFFERS) and returns its scan and sort
// nodes in one line, and the execution time.
func explain(ctx context.Context, conn *pgx.Conn, sql string) (string, time.Duration, error) {
	rows, err := conn.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+sql)
	if err != nil {
		return "", 0, fmt.Errorf("explain: %w", err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", 0, fmt.Errorf("explain: %w", err)
	}
	var nodes []string
	var took time.Duration
	buffers := ""
	for _, l := range lines {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "->"))
		if m := execTime.FindStringSubmatch(l); m != nil {
			var ms float64
			_, _ = fmt.Sscan(m[1], &ms)
			took = time.Duration(ms * float64(time.Millisecond))
		}
		switch {
		case strings.HasPrefix(l, "Buffers:") && buffers == "":
			buffers = l // the top node's: the whole query's
		case strings.Contains(l, "Scan") || strings.HasPrefix(l, "Sort") || strings.HasPrefix(l, "Filter:") ||
			strings.HasPrefix(l, "Rows Removed") || strings.HasPrefix(l, "Index Cond:"):
			// Drop the cost estimates, keep the actual rows.
			if i := strings.Index(l, "  (cost="); i > 0 {
				if j := strings.Index(l, "(actual"); j > i {
					l = l[:i] + " " + l[j:]
				} else {
					l = l[:i]
				}
			}
			nodes = append(nodes, l)
		}
	}
	if buffers != "" {
		nodes = append(nodes, buffers)
	}
	return strings.Join(nodes, "; "), took, nil
}
