package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/opsbox/opsbox/ports"
)

// QueueStater is a queue that can describe its backlog (the Redis queue).
type QueueStater interface {
	Stats(ctx context.Context) (ports.QueueStats, error)
}

// WatchQueue exports the queue's backlog, read at every scrape:
// waiting and pending jobs, the age of the oldest of each, and consumers.
func (m *Metrics) WatchQueue(q QueueStater) {
	m.reg.MustRegister(queueCollector{q: q})
}

var (
	queueWaiting = prometheus.NewDesc("opsbox_queue_waiting_jobs",
		"Jobs published and not yet read by any worker.", nil, nil)
	queueOldestWaiting = prometheus.NewDesc("opsbox_queue_oldest_waiting_seconds",
		"Age of the oldest job no worker has read yet (0 if none).", nil, nil)
	queuePending = prometheus.NewDesc("opsbox_queue_pending_jobs",
		"Jobs read by a worker and not yet acknowledged.", nil, nil)
	queueOldestPending = prometheus.NewDesc("opsbox_queue_oldest_pending_seconds",
		"Age, since publication, of the oldest unacknowledged job (0 if none).", nil, nil)
	queueConsumers = prometheus.NewDesc("opsbox_queue_consumers",
		"Consumers the queue knows of (workers times their concurrency, plus ones not yet cleaned up).", nil, nil)
)

type queueCollector struct{ q QueueStater }

func (queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{queueWaiting, queueOldestWaiting, queuePending, queueOldestPending, queueConsumers} {
		ch <- d
	}
}

// Collect reads the stats with a short timeout; if the queue does not
// answer, the series are left out of this scrape rather than failing it.
func (c queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := c.q.Stats(ctx)
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(queueWaiting, prometheus.GaugeValue, float64(st.Waiting))
	ch <- prometheus.MustNewConstMetric(queueOldestWaiting, prometheus.GaugeValue, st.OldestWaiting.Seconds())
	ch <- prometheus.MustNewConstMetric(queuePending, prometheus.GaugeValue, float64(st.Pending))
	ch <- prometheus.MustNewConstMetric(queueOldestPending, prometheus.GaugeValue, st.OldestPending.Seconds())
	ch <- prometheus.MustNewConstMetric(queueConsumers, prometheus.GaugeValue, float64(st.Consumers))
}
