package heartbeat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/octavia-go/amphora-agent/haproxy"
)

// LoadBalancers are the haproxy load balancers of the amphora
// (*haproxy.Inventory).
type LoadBalancers interface {
	// RunningLoadBalancers returns the load balancers whose haproxy runs.
	RunningLoadBalancers(ctx context.Context) []string
	// SocketPath is a load balancer's stats socket.
	SocketPath(lbID string) string
}

// collectHAProxy reads the statistics of every running load balancer,
// all at once ("show stat" on each stats socket, each bounded by
// QueryTimeout and by ctx, the heartbeat's budget). A load balancer whose
// socket fails or does not answer in time (a hung haproxy) is left out
// of this heartbeat alone: the controller counts its listeners missing,
// which is what the reference does when a socket fails. The others are
// reported. missed says which were left out and why.
func (s *Sender) collectHAProxy(ctx context.Context) (r *Report, missed []string) {
	lbs := s.src.LoadBalancers
	ids := lbs.RunningLoadBalancers(ctx)
	reps := make([]*haproxy.StatsReport, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			qctx, cancel := context.WithTimeout(ctx, s.QueryTimeout)
			defer cancel()
			reps[i], errs[i] = haproxy.NewStatsClient(lbs.SocketPath(id)).Report(qctx)
		})
	}
	wg.Wait()
	r = newReport()
	for i, id := range ids {
		if err := errs[i]; err != nil {
			s.stats.lbFailures.Add(1)
			missed = append(missed, fmt.Sprintf("load balancer %s: %v", id, err))
			if stopping(ctx) {
				continue
			}
			s.conds.set("lb:"+id, errState(err), slog.LevelError,
				"haproxy statistics unavailable: load balancer left out of the heartbeat, the controller will count its listeners as missing",
				"lb_id", id, "err", err, "left_out_so_far", s.stats.lbFailures.Load())
			continue
		}
		s.conds.clear("lb:"+id, "haproxy statistics available again", "lb_id", id)
		r.addHAProxy(reps[i])
	}
	return r, missed
}

// fromHAProxy maps one haproxy's statistics (its frontends and
// backends) onto the heartbeat's terms.
func fromHAProxy(rep *haproxy.StatsReport) *Report {
	r := newReport()
	r.addHAProxy(rep)
	return r
}

// addHAProxy adds one haproxy's statistics to r, mapped as fromHAProxy
// does (no intermediate report: the maps are filled once).
func (r *Report) addHAProxy(rep *haproxy.StatsReport) {
	for id, l := range rep.Listeners {
		r.Listeners[id] = Counters{Status: l.Status, BytesIn: l.Bin, BytesOut: l.Bout,
			Current: l.Scur, Total: l.Stot, RequestErrors: l.Ereq}
	}
	for id, p := range rep.Pools {
		r.Pools[id] = Pool{Status: p.Status, Members: p.Members}
	}
}

// stopping says the sender is being stopped (not that a deadline passed):
// failures then are not worth a log line.
func stopping(ctx context.Context) bool { return errors.Is(ctx.Err(), context.Canceled) }
