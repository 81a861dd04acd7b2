package heartbeat

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// condLog logs conditions that last across heartbeats (no key, keepalived
// down, a controller unreachable, a stats socket failing) without repeating
// them every interval: a condition is logged when it appears or changes,
// again every remind period while it lasts, and its end is logged once.
type condLog struct {
	log    *slog.Logger
	remind time.Duration

	mu     sync.Mutex // guards the following
	active map[string]condState
}

type condState struct {
	state  string
	logged time.Time
}

func newCondLog(log *slog.Logger, remind time.Duration) *condLog {
	return &condLog{log: log, remind: remind, active: map[string]condState{}}
}

// set records that condition key holds in state and logs msg when the
// condition is new, its state changed, or the reminder period passed.
func (c *condLog) set(key, state string, level slog.Level, msg string, args ...any) {
	now := time.Now()
	c.mu.Lock()
	cur, ok := c.active[key]
	due := !ok || cur.state != state || (c.remind > 0 && now.Sub(cur.logged) >= c.remind)
	if due {
		c.active[key] = condState{state: state, logged: now}
	}
	c.mu.Unlock()
	if due {
		c.log.Log(context.Background(), level, msg, args...)
	}
}

// clear ends condition key, logging msg at info level if it was active.
func (c *condLog) clear(key, msg string, args ...any) {
	c.mu.Lock()
	_, ok := c.active[key]
	delete(c.active, key)
	c.mu.Unlock()
	if ok && msg != "" {
		c.log.Info(msg, args...)
	}
}
