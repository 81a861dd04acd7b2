package heartbeat

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/octavia-go/amphora-agent/agent/config"
)

// The controllers a heartbeat goes to: one entry of
// controller_ip_port_list per heartbeat, round robin. An entry that is
// not host:port, or whose name does not resolve, is skipped (logged once,
// counted, shown by "amphora-agent status") and never stops heartbeats to
// the others; the configuration accepts such entries so that one typo
// cannot keep the agent from starting or PUT /1.0/config from applying.
// Names are looked up again at every heartbeat (DNS may come up after
// the agent, or the name may move); a lookup that fails or is still
// running when the heartbeat is due falls back to the name's last answer.

// rotation follows changes of controller_ip_port_list.
func (s *Sender) rotation(cfg *config.Config) {
	if !slices.Equal(s.dests, cfg.ControllerIPPortList) {
		s.dests = slices.Clone(cfg.ControllerIPPortList)
		s.next = 0
	}
}

// entryAddr is an entry as the heartbeat uses it: a literal address now,
// or a name whose lookup is under way.
type entryAddr struct {
	ap     netip.AddrPort // valid for a literal address
	host   string         // a name
	port   uint16
	lookup *lookup
	err    error // the entry is malformed
}

// lookups parses every entry and starts the lookup of every name.
func (s *Sender) lookups(ctx context.Context) []entryAddr {
	out := make([]entryAddr, len(s.dests))
	for i, e := range s.dests {
		out[i] = s.parseEntry(ctx, e)
	}
	return out
}

func (s *Sender) parseEntry(ctx context.Context, entry string) entryAddr {
	host, port, err := config.SplitHostPort(entry)
	if err != nil {
		return entryAddr{err: err}
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return entryAddr{ap: netip.AddrPortFrom(a.Unmap(), uint16(port))}
	}
	return entryAddr{host: host, port: uint16(port), lookup: s.dns.start(ctx, s.Resolver, host, s.ResolveTimeout)}
}

// destination picks the next usable controller, round robin, waiting for
// name lookups no longer than the heartbeat's send deadline.
func (s *Sender) destination(ctx context.Context, rd round, addrs []entryAddr) (netip.AddrPort, string, bool) {
	wait := time.NewTimer(time.Until(rd.send))
	defer wait.Stop()
	late := false
	for i := range len(s.dests) {
		idx := (s.next + i) % len(s.dests)
		entry, a := s.dests[idx], addrs[idx]
		ap, err := a.ap, a.err
		if a.lookup != nil {
			ap, err = s.resolved(ctx, a, wait.C, &late)
		}
		if err != nil {
			s.stats.skippedDests.Add(1)
			s.conds.set("dest:"+entry, err.Error(), slog.LevelWarn, "controller address skipped", "dest", entry, "err", err)
			continue
		}
		s.conds.clear("dest:"+entry, "controller address usable again", "dest", entry)
		s.conds.clear("dest", "")
		s.next = (idx + 1) % len(s.dests)
		return ap, entry, true
	}
	s.conds.set("dest", "unusable", slog.LevelError, "no usable controller address: heartbeats are not sent", "entries", len(s.dests))
	return netip.AddrPort{}, "", false
}

// resolved waits for a name's lookup (until due fires, once for all the
// names of a heartbeat) and returns its address, else the name's last
// answer.
func (s *Sender) resolved(ctx context.Context, a entryAddr, due <-chan time.Time, late *bool) (netip.AddrPort, error) {
	var (
		addr netip.Addr
		err  error
	)
	if *late {
		err = fmt.Errorf("lookup %s: still running", a.host)
	} else {
		select {
		case <-a.lookup.done:
			addr, err = a.lookup.addr, a.lookup.err
		case <-due:
			*late = true
			err = fmt.Errorf("lookup %s: still running", a.host)
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err == nil {
		s.conds.clear("dns:"+a.host, "controller name resolved again", "host", a.host)
		return netip.AddrPortFrom(addr, a.port), nil
	}
	if prev, ok := s.dns.last(a.host); ok {
		s.conds.set("dns:"+a.host, err.Error(), slog.LevelWarn, "controller name not resolved, using its last known address",
			"host", a.host, "addr", prev.String(), "err", err)
		return netip.AddrPortFrom(prev, a.port), nil
	}
	return netip.AddrPort{}, err
}

// dnsCache runs at most one lookup per name at a time and keeps each
// name's last answer.
type dnsCache struct {
	mu       sync.Mutex // guards the following
	inflight map[string]*lookup
	known    map[string]netip.Addr
}

// lookup is one name lookup; done is closed when addr or err is set.
type lookup struct {
	done chan struct{}
	addr netip.Addr
	err  error
}

// start returns the running lookup of host, or starts one. The lookup is
// bounded by timeout, not by the heartbeat: an answer that comes late
// serves the next heartbeat.
func (c *dnsCache) start(ctx context.Context, r *net.Resolver, host string, timeout time.Duration) *lookup {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l := c.inflight[host]; l != nil {
		return l
	}
	if c.inflight == nil {
		c.inflight, c.known = map[string]*lookup{}, map[string]netip.Addr{}
	}
	l := &lookup{done: make(chan struct{})}
	c.inflight[host] = l
	go func() {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		addrs, err := r.LookupNetIP(lctx, "ip", host)
		cancel()
		if err == nil && len(addrs) == 0 {
			err = fmt.Errorf("lookup %s: no address", host)
		}
		c.mu.Lock()
		if err == nil {
			l.addr = addrs[0].Unmap() // the first answer, as the reference
			c.known[host] = l.addr
		} else {
			l.err = err
		}
		delete(c.inflight, host)
		c.mu.Unlock()
		close(l.done)
	}()
	return l
}

// last returns the last address host resolved to.
func (c *dnsCache) last(host string) (netip.Addr, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.known[host]
	return a, ok
}

// CheckDestination says whether a controller_ip_port_list entry is
// usable now: its address, or why not (not host:port, name not
// resolving). It is the check "amphora-agent status" shows for every
// entry.
func CheckDestination(ctx context.Context, r *net.Resolver, entry string) (netip.AddrPort, error) {
	host, port, err := config.SplitHostPort(entry)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(a.Unmap(), uint16(port)), nil
	}
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err == nil && len(addrs) == 0 {
		err = fmt.Errorf("lookup %s: no address", host)
	}
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(addrs[0].Unmap(), uint16(port)), nil
}
