package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
)

// MaintenanceConfig tunes the periodic work of the workers. Zero fields
// take defaults.
type MaintenanceConfig struct {
	// Holder names this process in locks (required to be unique per process).
	Holder string
	// ReconcileEvery is how often stranded tasks are looked for (default
	// 1 s); it also bounds how late a retry starts after its backoff.
	ReconcileEvery time.Duration
	// MinAge is how long a freshly published job is trusted before it may
	// be published again (default 5 s): it covers the moment between a
	// publish and its delivery, and clock skew between hosts.
	MinAge time.Duration
	// Lease must match the executors' lease (default 30 s).
	Lease time.Duration
	// Batch bounds the tasks handled per reconcile pass (default 500).
	Batch int
	// CleanupEvery is how often finished tasks are deleted (default 1 h).
	CleanupEvery time.Duration
	// Retention is how long finished tasks are kept (default 168 h); 0
	// after defaults means forever is not supported: set it large instead.
	Retention time.Duration
	// CleanupBatch bounds the rows one delete statement removes (default 1000).
	CleanupBatch int
	// TrimEvery is how often a queue that can trim is asked to drop the
	// jobs it has delivered and had acknowledged (default 1 minute).
	TrimEvery time.Duration
}

// Trimmer is implemented by queues whose transport keeps jobs after they
// are acknowledged (a Redis stream) and can drop them.
type Trimmer interface {
	Trim(ctx context.Context) (int64, error)
}

func (c *MaintenanceConfig) setDefaults() {
	if c.Holder == "" {
		c.Holder = "opsbox"
	}
	if c.ReconcileEvery <= 0 {
		c.ReconcileEvery = time.Second
	}
	if c.MinAge <= 0 {
		c.MinAge = 5 * time.Second
	}
	if c.Lease <= 0 {
		c.Lease = 30 * time.Second
	}
	if c.Batch <= 0 {
		c.Batch = 500
	}
	if c.CleanupEvery <= 0 {
		c.CleanupEvery = time.Hour
	}
	if c.Retention <= 0 {
		c.Retention = 168 * time.Hour
	}
	if c.CleanupBatch <= 0 {
		c.CleanupBatch = 1000
	}
	if c.TrimEvery <= 0 {
		c.TrimEvery = time.Minute
	}
}

// Maintenance is the periodic work that keeps the system whole: the
// reconciler, which publishes the jobs of tasks whose job was lost or is
// due (retries after backoff), and takes back tasks from dead workers; and
// the cleaner, which deletes finished tasks past their retention. Any
// number of workers run it; a lock makes one of them do each pass.
type Maintenance struct {
	store  ports.TaskStore
	queue  ports.JobQueue
	locker ports.Locker
	dead   ports.DeadLetterQueue
	obs    Observer
	cfg    MaintenanceConfig
	clock  ports.Clock
	log    *slog.Logger
}

// NewMaintenance returns the maintenance of store and queue.
func NewMaintenance(store ports.TaskStore, queue ports.JobQueue, locker ports.Locker, cfg MaintenanceConfig, opts ...Option) *Maintenance {
	o := buildOptions(opts)
	cfg.setDefaults()
	return &Maintenance{store: store, queue: queue, locker: locker, dead: o.dead, obs: o.obs, cfg: cfg, clock: o.clock, log: o.log}
}

// Lock names.
const (
	reconcileLock = "opsbox.reconcile"
	cleanupLock   = "opsbox.cleanup"
)

// Run reconciles and cleans on their intervals until ctx is canceled. A
// failed pass is logged and tried again at the next tick.
func (m *Maintenance) Run(ctx context.Context) {
	reconcile := time.NewTicker(m.cfg.ReconcileEvery)
	defer reconcile.Stop()
	cleanup := time.NewTicker(m.cfg.CleanupEvery)
	defer cleanup.Stop()
	trim := time.NewTicker(m.cfg.TrimEvery)
	defer trim.Stop()
	m.cleanupLogged(ctx)
	defer m.release()
	for {
		select {
		case <-ctx.Done():
			return
		case <-reconcile.C:
			if _, err := m.Reconcile(ctx); err != nil && ctx.Err() == nil {
				m.log.WarnContext(ctx, "reconcile failed", "error", err)
			}
		case <-cleanup.C:
			m.cleanupLogged(ctx)
		case <-trim.C:
			m.trim(ctx)
		}
	}
}

// trim asks the queue to drop what it no longer needs. Trimming is safe
// from any number of workers at once, so it takes no lock.
func (m *Maintenance) trim(ctx context.Context) {
	t, ok := m.queue.(Trimmer)
	if !ok {
		return
	}
	n, err := t.Trim(ctx)
	switch {
	case err != nil && ctx.Err() == nil:
		m.log.WarnContext(ctx, "trimming the queue failed", "error", err)
	case n > 0:
		m.log.DebugContext(ctx, "trimmed acknowledged jobs from the queue", "count", n)
	}
}

// release frees this process's locks so another worker takes over the
// maintenance at once, not when the leases run out.
func (m *Maintenance) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, name := range []string{reconcileLock, cleanupLock} {
		if err := m.locker.Unlock(ctx, name, m.cfg.Holder); err != nil {
			m.log.Warn("could not release a maintenance lock", "lock", name, "error", err)
		}
	}
}

func (m *Maintenance) cleanupLogged(ctx context.Context) {
	if _, err := m.Cleanup(ctx); err != nil && ctx.Err() == nil {
		m.log.WarnContext(ctx, "cleanup failed", "error", err)
	}
}

// Reconcile makes one pass: RUNNING tasks whose worker stopped
// heartbeating are taken back (QUEUED again, or FAILED with no attempts
// left), and QUEUED tasks that are due and have no job in the queue get
// one. It returns how many jobs it published; it does nothing unless it
// holds the reconcile lock.
func (m *Maintenance) Reconcile(ctx context.Context) (int, error) {
	ok, err := m.locker.TryLock(ctx, reconcileLock, m.cfg.Holder, 3*m.cfg.ReconcileEvery+time.Second)
	if err != nil || !ok {
		return 0, err
	}
	delivered, err := m.queue.DeliveredBefore(ctx)
	if err != nil {
		return 0, fmt.Errorf("ask the queue what it delivered: %w", err)
	}
	now := m.clock.Now()
	tasks, err := m.store.Stranded(ctx, ports.StrandedQuery{
		Now: now,
		// MinAge before the watermark too: a job is stamped just before it
		// is published, and the queue's clock may differ from ours.
		EnqueuedBefore:  minTime(delivered, now).Add(-m.cfg.MinAge),
		HeartbeatBefore: now.Add(-m.cfg.Lease),
		Limit:           m.cfg.Batch,
	})
	if err != nil {
		return 0, fmt.Errorf("find stranded tasks: %w", err)
	}
	var jobs []ports.Job
	for _, stranded := range tasks {
		marked, rescued := false, false
		t, err := m.store.Update(ctx, stranded.ID, func(t *task.Task) error {
			marked = false
			now := m.clock.Now()
			rescued = false
			if t.LeaseExpired(now, m.cfg.Lease) {
				if err := t.Rescue(now, m.cfg.Lease); err != nil {
					return err
				}
				rescued = true
			}
			if t.Status != task.Queued || now.Before(t.AvailableAt) {
				return nil
			}
			marked = true
			return t.MarkEnqueued(now)
		})
		if errors.Is(err, task.ErrIllegalTransition) || errors.Is(err, task.ErrNotFound) {
			continue // it moved on meanwhile
		}
		if err != nil {
			// t is nil here: name the task by the id we asked for.
			return 0, fmt.Errorf("reconcile task %s: %w", stranded.ID, err)
		}
		if rescued {
			m.log.WarnContext(ctx, "took back a task whose worker stopped responding", "task_id", t.ID, "attempt", t.Attempts, "status", t.Status)
		}
		switch {
		case marked:
			jobs = append(jobs, jobFor(t)) // in the trace of the run that queued it
		case t.Status == task.Failed && m.dead != nil:
			m.log.WarnContext(ctx, "task failed: its worker stopped responding on the last attempt", "task_id", t.ID)
			d := ports.DeadLetter{TaskID: t.ID, Kind: t.Kind, Error: t.Error, Attempts: t.Attempts, FailedAt: now}
			if err := m.dead.Bury(ctx, d); err != nil {
				m.log.ErrorContext(ctx, "could not add the dead letter", "task_id", t.ID, "error", err)
			}
		}
	}
	if len(jobs) == 0 {
		return 0, nil
	}
	if err := m.queue.Publish(ctx, jobs...); err != nil {
		return 0, fmt.Errorf("publish %d jobs: %w", len(jobs), err)
	}
	m.obs.Republished(len(jobs))
	m.log.InfoContext(ctx, "published jobs of queued tasks", "count", len(jobs))
	return len(jobs), nil
}

// Cleanup deletes finished tasks older than the retention, in bounded
// batches, and returns how many it deleted; it does nothing unless it holds
// the cleanup lock.
func (m *Maintenance) Cleanup(ctx context.Context) (int, error) {
	ok, err := m.locker.TryLock(ctx, cleanupLock, m.cfg.Holder, m.cfg.CleanupEvery/2)
	if err != nil || !ok {
		return 0, err
	}
	before := m.clock.Now().Add(-m.cfg.Retention)
	total := 0
	for {
		n, err := m.store.DeleteFinished(ctx, before, m.cfg.CleanupBatch)
		total += n
		if err != nil {
			return total, fmt.Errorf("delete finished tasks: %w", err)
		}
		if n < m.cfg.CleanupBatch {
			break
		}
	}
	m.obs.Cleaned(total)
	m.log.InfoContext(ctx, "cleanup done", "deleted", total, "finished_before", before, "retention", m.cfg.Retention.String())
	return total, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
