package heartbeat

import (
	"context"
	"log/slog"

	"github.com/octavia-go/amphora-agent/keepalived"
)

// LVSListeners are the UDP/SCTP listeners of the amphora, run by
// keepalived in LVS mode (*keepalived.LVSManager).
type LVSListeners interface {
	Stats(ctx context.Context) (*keepalived.LVSReport, error)
}

// collectLVS adds the LVS listeners' statistics. When they cannot be
// read (ipvsadm fails, say) those listeners are left out and the
// heartbeat is still sent; it reports false then.
func (s *Sender) collectLVS(ctx context.Context, lvs LVSListeners, r *Report) (complete bool) {
	rep, err := lvs.Stats(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.conds.set("extra", err.Error(), slog.LevelError,
				"LVS listener statistics unavailable: those listeners are left out of the heartbeat", "err", err)
		}
		return false
	}
	s.conds.clear("extra", "LVS listener statistics available again")
	r.add(fromLVS(rep))
	return true
}

// fromLVS maps the IPVS counters of the LVS listeners onto the
// heartbeat's terms; their pools are keyed by bare pool id and they have
// no request errors.
func fromLVS(rep *keepalived.LVSReport) *Report {
	r := newReport()
	for id, l := range rep.Listeners {
		r.Listeners[id] = Counters{Status: l.Status, BytesIn: l.InBytes, BytesOut: l.OutBytes,
			Current: l.ActiveConns, Total: l.Conns}
	}
	for id, p := range rep.Pools {
		r.Pools[id] = Pool{Status: p.Status, Members: p.Members}
	}
	return r
}
