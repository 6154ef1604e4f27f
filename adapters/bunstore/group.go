package bunstore

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/schema"

	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
)

// Group commit.
//
// Every job costs at least two status changes (RUNNING, then its outcome),
// and with a transaction each a worker spends its time waiting on round
// trips and on the database flushing its log, not running SQL. So Update
// does not open a transaction of its own. It joins a batch: the Updates that
// arrive while earlier batches are being written are gathered, each
// caller's fn is applied to its own task, and the changed rows are written
// in one statement. Under light load a batch holds one Update and costs
// what a lone one did; under heavy load batches grow and the commits per
// task shrink.
//
// On PostgreSQL the batch is optimistic: rows are read without locks (or
// taken from a small cache of rows this store wrote last) and written back
// with UPDATE ... FROM (VALUES ...) WHERE version = the version read, in
// autocommit. A row someone else changed meanwhile is not written; its fn
// runs again on a fresh read, so fn still decides on the latest state and
// two racing updates cannot both win. A task's second status change in a
// worker (the outcome after the start) is then one statement, one round
// trip. SQLite runs in the process with one connection and a database-wide
// write lock, so there a batch is one transaction, rows written one by one.
//
// Callers see no difference: each gets its own task or error, and an error
// from one fn leaves the others' changes alone.

const (
	// maxBatch caps the Updates of one batch, bounding its statement.
	maxBatch = 128
	// maxRounds bounds how often a batch reads again the rows that others
	// changed under it before giving up on them.
	maxRounds = 10
	// cachedRows and cachedRowBytes bound the rows a store remembers (at
	// most 16 MiB of JSON): enough for the jobs a worker holds at once.
	cachedRows     = 1024
	cachedRowBytes = 16 << 10
	// maxBatchWait bounds a batch's transaction when no caller set a
	// deadline sooner, so a hung connection cannot hold callers forever.
	maxBatchWait = 30 * time.Second
)

// updateReq is one caller's Update waiting for its batch.
type updateReq struct {
	ctx  context.Context
	id   string
	fn   func(*task.Task) error
	done chan updateRes // buffered: the batch never waits for the caller
}

type updateRes struct {
	t      *task.Task
	err    error
	panicV any // a panic of fn, raised again on the caller's goroutine
}

// committer gathers Updates into batches and runs a few batches at once,
// each in a goroutine that lives as long as its batch. Updates whose
// caller marked them ports.LowPriority (a worker saving an outcome it has
// already acknowledged) have a lane of their own, one batch at a time, so
// they gather into large batches and never hold up the Updates a caller
// waits on (a worker marking a task RUNNING while its slot idles).
type committer struct {
	store *Store

	mu      sync.Mutex
	lanes   [2]lane         // 0: callers waiting; 1: low priority
	busy    map[string]bool // task ids of the batches being written
	batches atomic.Int64    // batches run, for tests
	singles atomic.Int64    // batches refused and retried one Update at a time
}

type lane struct {
	pending  []*updateReq
	inflight int
	max      int
}

func newCommitter(s *Store, maxInflight int) *committer {
	c := &committer{store: s, busy: make(map[string]bool)}
	c.lanes[0].max = max(1, maxInflight)
	c.lanes[1].max = 1
	return c
}

// do runs one Update through a batch and waits for its result. Once the
// request is part of a batch the caller waits for that batch even if ctx
// is canceled meanwhile: the batch may commit, and an error must mean the
// change was not made. The batch's own deadline (the earliest of its
// callers', at most maxBatchWait) bounds the wait.
func (c *committer) do(ctx context.Context, id string, fn func(*task.Task) error) (*task.Task, error) {
	if err := ctx.Err(); err != nil {
		return nil, classify(err, "update", id)
	}
	req := &updateReq{ctx: ctx, id: id, fn: fn, done: make(chan updateRes, 1)}
	l := &c.lanes[0]
	if ports.IsLowPriority(ctx) && c.store.postgres { // SQLite: one connection, one lane
		l = &c.lanes[1]
	}
	c.mu.Lock()
	l.pending = append(l.pending, req)
	c.startLocked()
	c.mu.Unlock()
	res := <-req.done
	if res.panicV != nil {
		panic(res.panicV)
	}
	return res.t, res.err
}

// startLocked starts batches while there is room and work. A task is in
// one batch at a time: a second Update of a task waits for the batch that
// holds the first, so it sees that one's result, and batches of this store
// never race each other for a row.
func (c *committer) startLocked() {
	for i := range c.lanes {
		l := &c.lanes[i]
		for l.inflight < l.max {
			var batch, rest []*updateReq
			for _, r := range l.pending {
				if len(batch) < maxBatch && !c.busy[r.id] {
					c.busy[r.id] = true
					batch = append(batch, r)
					continue
				}
				rest = append(rest, r)
			}
			l.pending = rest
			if len(batch) == 0 {
				break
			}
			l.inflight++
			go c.run(l, batch)
		}
	}
}

func (c *committer) run(l *lane, batch []*updateReq) {
	c.commit(batch)
	c.mu.Lock()
	for _, r := range batch {
		delete(c.busy, r.id)
	}
	l.inflight--
	c.startLocked()
	c.mu.Unlock()
}

// commit answers every request of the batch.
func (c *committer) commit(batch []*updateReq) {
	live := make([]*updateReq, 0, len(batch)) // not batch[:0]: run still needs batch
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.done <- updateRes{err: classify(err, "update", r.id)}
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := batchContext(live)
	defer cancel()
	c.batches.Add(1)
	if c.store.postgres {
		for i, res := range c.store.updateOptimistic(ctx, live) {
			live[i].done <- res
		}
		return
	}
	res, err := c.store.updateLocked(ctx, live)
	if err != nil && len(live) > 1 && ctx.Err() == nil && !isUnavailable(err) {
		// One bad row must not fail its neighbours: try each alone.
		c.singles.Add(1)
		for _, r := range live {
			one, err := c.store.updateLocked(ctx, []*updateReq{r})
			if err != nil {
				one = []updateRes{{err: classify(err, "update", r.id)}}
			}
			r.done <- one[0]
		}
		return
	}
	for i, r := range live {
		if err != nil {
			r.done <- updateRes{err: classify(err, "update", r.id)}
			continue
		}
		r.done <- res[i]
	}
}

// batchContext returns the context a batch runs in: the values of its
// first request (loggers, trace context), no cancellation, and the earliest
// deadline among its requests, at most maxBatchWait away.
func batchContext(batch []*updateReq) (context.Context, context.CancelFunc) {
	deadline := time.Now().Add(maxBatchWait)
	for _, r := range batch {
		if d, ok := r.ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
	}
	return context.WithDeadline(context.WithoutCancel(batch[0].ctx), deadline)
}

// updateLocked runs one transaction for the requests, whose task ids are
// distinct, and returns their results in order. An error means nothing was
// saved; results then are nil.
func (s *Store) updateLocked(ctx context.Context, reqs []*updateReq) ([]updateRes, error) {
	res := make([]updateRes, len(reqs))
	err := s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		clear(res)
		rows, err := s.lockRows(ctx, tx, reqs)
		if err != nil {
			return err
		}
		var changed []*taskRow
		var changedAt []int
		for i, r := range reqs {
			row := rows[r.id]
			next, out := apply(row, r)
			if next == nil {
				res[i] = out
				continue
			}
			next.Version = row.Version + 1
			changed = append(changed, next)
			changedAt = append(changedAt, i)
		}
		for _, row := range changed {
			if _, err := tx.NewUpdate().Model(row).ExcludeColumn("id", "created_at").WherePK().Exec(ctx); err != nil {
				return err
			}
		}
		for j, next := range changed {
			t, err := next.toTask()
			if err != nil {
				return err
			}
			res[changedAt[j]].t = t
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// apply runs the request's fn on the task in row. It returns the row to
// write, or nil and the caller's outcome when there is nothing to write: no
// row (the task does not exist), an error of fn (returned unchanged, as the
// port promises) or its panic.
func apply(row *taskRow, r *updateReq) (next *taskRow, out updateRes) {
	if row == nil {
		return nil, updateRes{err: fmt.Errorf("update task %s: %w", r.id, task.ErrNotFound)}
	}
	t, err := row.toTask()
	if err != nil {
		return nil, updateRes{err: classify(err, "update", r.id)}
	}
	defer func() {
		if p := recover(); p != nil {
			next, out = nil, updateRes{panicV: p}
		}
	}()
	if err := r.fn(t); err != nil {
		return nil, updateRes{err: err}
	}
	if t.ID != r.id {
		return nil, updateRes{err: fmt.Errorf("update task %s: fn changed the task id to %q", r.id, t.ID)}
	}
	next = rowFromTask(t)
	next.CreatedAt = row.CreatedAt
	return next, updateRes{}
}

// lockRows reads the requests' rows, keyed by id, inside tx. It serves the
// SQLite store only, whose immediate transaction already holds the
// database's write lock, so no other writer can change them before tx ends.
// (PostgreSQL updates are optimistic: see updateOptimistic.)
func (s *Store) lockRows(ctx context.Context, tx bun.Tx, reqs []*updateReq) (map[string]*taskRow, error) {
	ids := make([]string, len(reqs))
	for i, r := range reqs {
		ids[i] = r.id
	}
	var rows []taskRow
	if err := selectByID(tx, &rows, ids).Scan(ctx); err != nil {
		return nil, err
	}
	return byID(rows), nil
}

// selectByID selects the rows of the tasks with the ids into rows.
func selectByID(db bun.IDB, rows *[]taskRow, ids []string) *bun.SelectQuery {
	return db.NewSelect().Model(rows).Where("? IN (?)", bun.Ident("id"), bun.List(ids))
}

func byID(rows []taskRow) map[string]*taskRow {
	m := make(map[string]*taskRow, len(rows))
	for i := range rows {
		m[rows[i].ID] = &rows[i]
	}
	return m
}

// updateOptimistic applies and writes the requests, whose task ids are
// distinct, on PostgreSQL, and returns their results in order. Each round
// reads the rows it lacks (without locks), applies the fns and writes every
// changed row whose version is still the one read, in one statement; the
// rows others changed meanwhile go to the next round with a fresh read. A
// result based on a cached row counts only once the database confirmed it:
// when fn refuses a cached row, it is asked again about a fresh one.
func (s *Store) updateOptimistic(ctx context.Context, reqs []*updateReq) []updateRes {
	res := make([]updateRes, len(reqs))
	todo := make([]int, len(reqs))
	for i := range todo {
		todo[i] = i
	}
	stale := make([]bool, len(reqs)) // the cache may not be trusted for reqs[i]
	fail := func(err error) {
		for _, i := range todo {
			res[i].err = classify(err, "update", reqs[i].id)
		}
	}
	for round := 0; len(todo) > 0; round++ {
		if round == maxRounds {
			fail(fmt.Errorf("changed by others %d times in a row: %w", maxRounds, ports.ErrUnavailable))
			break
		}
		if round > 1 {
			// Another process keeps writing these rows: give it room.
			time.Sleep(time.Duration(round) * time.Millisecond)
		}
		rows := make(map[string]*taskRow, len(todo))
		fromDB := make(map[string]bool)
		var read []string
		for _, i := range todo {
			id := reqs[i].id
			if row := s.cache.get(id); row != nil && !stale[i] {
				rows[id] = row
				continue
			}
			read = append(read, id)
		}
		if len(read) > 0 {
			var got []taskRow
			if err := selectByID(s.db, &got, read).Scan(ctx); err != nil {
				fail(err)
				break
			}
			for id, row := range byID(got) {
				rows[id] = row
				fromDB[id] = true
			}
		}
		var writes, olds []*taskRow
		var writeAt, again []int
		for _, i := range todo {
			r := reqs[i]
			row := rows[r.id]
			next, out := apply(row, r)
			if next == nil {
				if row != nil && !fromDB[r.id] && out.panicV == nil {
					stale[i] = true // a refusal of a cached row: check a fresh one
					again = append(again, i)
					continue
				}
				res[i] = out
				continue
			}
			next.Version = row.Version
			writes = append(writes, next)
			olds = append(olds, row)
			writeAt = append(writeAt, i)
		}
		written, err := s.writeVersioned(ctx, writes, olds)
		if err != nil {
			todo = append(again, writeAt...)
			fail(err)
			break
		}
		for j, row := range writes {
			i := writeAt[j]
			if !written[row.ID] {
				s.cache.drop(row.ID)
				stale[i] = true
				again = append(again, i)
				continue
			}
			row.Version++
			s.cache.put(row)
			if res[i].t, err = row.toTask(); err != nil {
				res[i].err = classify(err, "update", row.ID)
			}
		}
		todo = again
	}
	return res
}

// writeVersioned writes rows whose Version holds the version they were
// read at, each only if the database still has that version, raising it,
// in one statement, and returns the ids it wrote. olds are the rows as
// read: only the columns some row changed are set, so a status change
// does not rewrite (and PostgreSQL does not parse again) a payload.
func (s *Store) writeVersioned(ctx context.Context, rows, olds []*taskRow) (map[string]bool, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	q := s.db.NewUpdate().
		With("_data", s.db.NewValues(&rows)).
		Model((*taskRow)(nil)).
		TableExpr("_data").
		Where("?TableAlias.? = _data.?", bun.Ident("id"), bun.Ident("id")).
		Where("?TableAlias.? = _data.?", bun.Ident("version"), bun.Ident("version")).
		Set("? = _data.? + 1", bun.Ident("version"), bun.Ident("version")).
		Returning("?TableAlias.?", bun.Ident("id"))
	// Every column of the model but the key, the creation time and the
	// version, so a column added to taskRow is written without more code.
	for _, f := range s.db.Table(reflect.TypeFor[taskRow]()).Fields {
		name := f.Name
		if name == "id" || name == "created_at" || name == "version" || !changed(f, rows, olds) {
			continue
		}
		if jsonColumns[name] {
			q = q.Set("? = _data.?::jsonb", bun.Ident(name), bun.Ident(name))
		} else {
			q = q.Set("? = _data.?", bun.Ident(name), bun.Ident(name))
		}
	}
	var ids []string
	if err := q.Scan(ctx, &ids); err != nil {
		return nil, err
	}
	written := make(map[string]bool, len(ids))
	for _, id := range ids {
		written[id] = true
	}
	return written, nil
}

// changed reports whether any row's field differs from its old value.
func changed(f *schema.Field, rows, olds []*taskRow) bool {
	for i := range rows {
		a, b := f.Value(reflect.ValueOf(rows[i]).Elem()), f.Value(reflect.ValueOf(olds[i]).Elem())
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			return true
		}
	}
	return false
}

// jsonColumns need a cast in writeVersioned's SET: bun types them as text
// in the VALUES list, which PostgreSQL does not assign to jsonb by itself.
// (The times are typed by the timestamptz tags of taskRow.)
var jsonColumns = map[string]bool{"payload": true, "result": true, "history": true}

// rowCache remembers the last row this store wrote for a task, so the next
// update of that task (a worker saving the outcome of the attempt it just
// started) can skip reading it. A stale entry costs one more round: the
// version check refuses the write. It holds at most cachedRows rows of at
// most cachedRowBytes of JSON each, and forgets half of them, in no
// particular order, when full.
type rowCache struct {
	mu   sync.Mutex
	rows map[string]*taskRow // read-only once stored
}

func (c *rowCache) get(id string) *taskRow {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rows[id]
}

// put remembers row unless a newer version of it is remembered already
// (a read ahead that lost a race with a write).
func (c *rowCache) put(row *taskRow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rows == nil {
		c.rows = make(map[string]*taskRow)
	}
	if old, ok := c.rows[row.ID]; ok && old.Version > row.Version {
		return
	}
	if len(row.Payload)+len(row.Result.String)+len(row.History) > cachedRowBytes {
		delete(c.rows, row.ID) // too big to keep; its next Update reads it
		return
	}
	if len(c.rows) >= cachedRows {
		for id := range c.rows {
			delete(c.rows, id)
			if len(c.rows) < cachedRows/2 {
				break
			}
		}
	}
	c.rows[row.ID] = row
}

func (c *rowCache) drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.rows, id)
}

// preloadTimeout bounds one read ahead.
const preloadTimeout = 5 * time.Second

// preloader gathers the ids of Preload calls and reads them, many per
// statement, one statement at a time, in a goroutine that lives while
// there are ids to read.
type preloader struct {
	mu      sync.Mutex
	pending []string
	running bool
}

// Preload implements ports.Preloader on PostgreSQL: it reads the tasks
// into the store's cache in the background, so the next Update of each
// costs one statement. It returns at once; on SQLite it does nothing.
func (s *Store) Preload(ctx context.Context, ids ...string) {
	if !s.postgres {
		return
	}
	s.preload.mu.Lock()
	defer s.preload.mu.Unlock()
	for _, id := range ids {
		if s.cache.get(id) == nil {
			s.preload.pending = append(s.preload.pending, id)
		}
	}
	if !s.preload.running && len(s.preload.pending) > 0 {
		s.preload.running = true
		go s.preloadLoop(context.WithoutCancel(ctx))
	}
}

func (s *Store) preloadLoop(ctx context.Context) {
	for {
		s.preload.mu.Lock()
		n := min(len(s.preload.pending), maxBatch)
		if n == 0 {
			s.preload.running = false
			s.preload.mu.Unlock()
			return
		}
		ids := slices.Clone(s.preload.pending[:n])
		s.preload.pending = s.preload.pending[n:]
		s.preload.mu.Unlock()

		readCtx, cancel := context.WithTimeout(ctx, preloadTimeout)
		var rows []taskRow
		err := selectByID(s.db, &rows, ids).Scan(readCtx)
		cancel()
		if err != nil {
			continue // a hint only: the Update reads for itself
		}
		for i := range rows {
			s.cache.put(&rows[i])
		}
	}
}
