package heartbeat

import (
	"context"
	"log/slog"

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

// collectHAProxy adds the statistics of every running load balancer,
// each read on its own ("show stat" on its stats socket, bounded by
// QueryTimeout). A load balancer whose socket does not answer is left
// out, which the controller counts as its listeners missing (the
// reference fails closed the same way); it reports false then.
func (s *Sender) collectHAProxy(ctx context.Context, lbs LoadBalancers, r *Report) (complete bool) {
	complete = true
	for _, id := range lbs.RunningLoadBalancers(ctx) {
		qctx, cancel := context.WithTimeout(ctx, s.QueryTimeout)
		rep, err := haproxy.NewStatsClient(lbs.SocketPath(id)).Report(qctx)
		cancel()
		if err != nil {
			complete = false
			if ctx.Err() == nil {
				s.conds.set("lb:"+id, err.Error(), slog.LevelError,
					"haproxy statistics unavailable: load balancer left out of the heartbeat, the controller will count its listeners as missing",
					"lb_id", id, "err", err)
			}
			continue
		}
		s.conds.clear("lb:"+id, "haproxy statistics available again", "lb_id", id)
		r.add(fromHAProxy(rep))
	}
	return complete
}

// fromHAProxy maps one haproxy's statistics (its frontends and
// backends) onto the heartbeat's terms.
func fromHAProxy(rep *haproxy.StatsReport) *Report {
	r := newReport()
	for id, l := range rep.Listeners {
		r.Listeners[id] = Counters{Status: l.Status, BytesIn: l.Bin, BytesOut: l.Bout,
			Current: l.Scur, Total: l.Stot, RequestErrors: l.Ereq}
	}
	for id, p := range rep.Pools {
		r.Pools[id] = Pool{Status: p.Status, Members: p.Members}
	}
	return r
}
