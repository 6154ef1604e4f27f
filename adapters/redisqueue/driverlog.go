package redisqueue

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"
)

// RouteDriverLogs sends the Redis client library's own messages (dial
// failures during an outage, for example), which it otherwise prints as
// plain text on stderr, to log at WARN level. The library keeps one logger
// for the whole process, so a program calls this once, from main.
func RouteDriverLogs(log *slog.Logger) {
	redis.SetLogger(driverLogger{log})
}

type driverLogger struct{ log *slog.Logger }

func (d driverLogger) Printf(ctx context.Context, format string, v ...any) {
	d.log.WarnContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
}
