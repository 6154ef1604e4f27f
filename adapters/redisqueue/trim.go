package redisqueue

import (
	"context"
	"fmt"
)

// Trim deletes the stream entries that every consumer group has both read
// and acknowledged, so the stream does not grow without bound and a new
// group does not replay old jobs. Entries a group has not read yet, and
// entries read but not acknowledged (which another worker may still claim),
// stay. It returns how many entries it deleted.
func (q *Queue) Trim(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	groups, err := q.client.XInfoGroups(ctx, q.cfg.Stream).Result()
	if isNoSuchKey(err) {
		return 0, nil
	}
	if err != nil {
		return 0, wrap("trim", err)
	}
	if len(groups) == 0 {
		return 0, nil // nobody has read anything yet
	}
	var keep *entryID // the oldest entry some group still needs
	for _, g := range groups {
		last, ok := parseID(g.LastDeliveredID)
		if !ok {
			return 0, fmt.Errorf("redisqueue: trim: unexpected last-delivered id %q", g.LastDeliveredID)
		}
		need := entryID{ms: last.ms, seq: last.seq + 1} // the first unread entry
		if g.Pending > 0 {
			p, err := q.client.XPending(ctx, q.cfg.Stream, g.Name).Result()
			if err != nil {
				return 0, wrap("trim", err)
			}
			if lower, ok := parseID(p.Lower); ok && lower.less(need) {
				need = lower
			}
		}
		if keep == nil || need.less(*keep) {
			keep = &need
		}
	}
	n, err := q.client.XTrimMinID(ctx, q.cfg.Stream, keep.String()).Result()
	if err != nil {
		return 0, wrap("trim", err)
	}
	return n, nil
}

func (a entryID) less(b entryID) bool { return a.ms < b.ms || a.ms == b.ms && a.seq < b.seq }

func (a entryID) String() string { return fmt.Sprintf("%d-%d", a.ms, a.seq) }
