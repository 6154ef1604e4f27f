package redisqueue

import (
	"context"
	"time"

	"github.com/opsbox/opsbox/ports"
)

// Stats reports the stream's backlog for this queue's consumer group. The
// ages come from the entries' ids, which Redis stamps with its clock when
// they are published.
func (q *Queue) Stats(ctx context.Context) (ports.QueueStats, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	var st ports.QueueStats
	groups, err := q.client.XInfoGroups(ctx, q.cfg.Stream).Result()
	if isNoSuchKey(err) {
		return st, nil
	}
	if err != nil {
		return st, wrap("stats", err)
	}
	last := "0-0"
	for _, g := range groups {
		if g.Name == q.cfg.Group {
			st.Waiting, st.Pending, st.Consumers = max(g.Lag, 0), g.Pending, g.Consumers
			last = g.LastDeliveredID
		}
	}
	now := time.Now()
	age := func(id string) time.Duration {
		if e, ok := parseID(id); ok {
			return max(now.Sub(time.UnixMilli(int64(e.ms))), 0)
		}
		return 0
	}
	if next, err := q.client.XRangeN(ctx, q.cfg.Stream, "("+last, "+", 1).Result(); err != nil {
		return st, wrap("stats", err)
	} else if len(next) > 0 {
		st.OldestWaiting = age(next[0].ID)
		if st.Waiting == 0 { // lag unknown to Redis (after XDEL): at least one waits
			st.Waiting = 1
		}
	}
	if st.Pending > 0 {
		p, err := q.client.XPending(ctx, q.cfg.Stream, q.cfg.Group).Result()
		if err != nil {
			return st, wrap("stats", err)
		}
		st.OldestPending = age(p.Lower)
	}
	return st, nil
}
