package heartbeat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/octavia-go/amphora-agent/agent/config"
)

// Sources are the parts of the amphora a heartbeat reports on; a nil
// part is left out. Each is collected on its own: one failing leaves
// out only its listeners.
type Sources struct {
	// LoadBalancers are the haproxy load balancers (haproxy.go).
	LoadBalancers LoadBalancers
	// LVS are the UDP/SCTP listeners (lvs.go).
	LVS LVSListeners
	// VRRP gates the heartbeat (keepalived.Paths): while keepalived is
	// configured but not running nothing is sent, so the controller
	// fails the amphora over.
	VRRP VRRP
}

// VRRP reports on the VRRP keepalived (keepalived.Paths).
type VRRP interface {
	// Status says whether a VRRP configuration exists and, when
	// keepalived does not run, why.
	Status() (configured bool, problem string)
}

// MaxDatagram is the largest UDP payload over IPv4; bigger heartbeats
// cannot be sent (reported, since the reference dropped them silently).
const MaxDatagram = 65507

// Sender builds and sends heartbeats. Create it with New; Run is its loop.
// Build may be called while Run runs (the Sources must then be safe for
// concurrent use).
type Sender struct {
	store       *config.Store
	src         Sources
	log         *slog.Logger
	counterPath string
	conds       *condLog

	// Tunables, set by New; change them before Run only.
	QueryTimeout   time.Duration // one stats socket query
	ResolveTimeout time.Duration // one host name lookup
	ResolveTTL     time.Duration // resolved controller names are reused this long
	SendTimeout    time.Duration
	Resolver       *net.Resolver

	mu       sync.Mutex // guards the following
	seq      uint64
	counters counterSet // last absolute values reported (and persisted)

	// Used by the Run goroutine only.
	dests []string // controller_ip_port_list the rotation is built on
	next  int      // index in dests of the next destination
	cache map[string]resolved
}

type resolved struct {
	addr netip.Addr
	err  error
	at   time.Time
}

// New returns a sender reading options from store, what to report from
// src, and the counters file from base_path (loaded now, so an agent
// restart continues the deltas where the previous process left them).
func New(store *config.Store, src Sources, log *slog.Logger) *Sender {
	cfg := store.Current()
	s := &Sender{
		store:          store,
		src:            src,
		log:            log,
		counterPath:    filepath.Join(cfg.BasePath, CountersFile),
		conds:          newCondLog(log, 10*time.Minute),
		QueryTimeout:   5 * time.Second,
		ResolveTimeout: 3 * time.Second,
		ResolveTTL:     time.Minute,
		SendTimeout:    time.Second,
		Resolver:       net.DefaultResolver,
		cache:          map[string]resolved{},
	}
	c, err := loadCounters(s.counterPath)
	if err != nil {
		log.Warn("statistics counters unreadable, starting from zero", "path", s.counterPath, "err", err)
	}
	s.counters = c
	return s
}

// Run sends a heartbeat now and then every heartbeat_interval until ctx is
// done. Options are read from the store at every heartbeat, so a change by
// PUT /1.0/config (key, destinations, interval) applies to the next one;
// an interval change also reschedules the pending wait.
func (s *Sender) Run(ctx context.Context) {
	s.log.Info("heartbeat sender started")
	defer s.log.Info("heartbeat sender stopped")
	timer := time.NewTimer(0)
	defer timer.Stop()
	var last time.Time // start of the latest heartbeat
	for {
		changed := s.store.Changed()
		select {
		case <-ctx.Done():
			return
		case <-changed:
			if !last.IsZero() {
				timer.Reset(time.Until(last.Add(s.interval())))
			}
			continue
		case <-timer.C:
		}
		last = time.Now()
		s.tick(ctx)
		// The interval runs from the start of a heartbeat, so collection
		// time does not stretch the period.
		timer.Reset(time.Until(last.Add(s.interval())))
	}
}

// minInterval guards the loop against a zero or negative interval (the
// configuration refuses them; a Store can still be handed anything).
const minInterval = 100 * time.Millisecond

func (s *Sender) interval() time.Duration {
	return max(s.store.Current().HeartbeatInterval, minInterval)
}

// Build returns the JSON text of the heartbeat the sender would send now,
// for inspection (amphora-agent heartbeat --print). It neither consumes a
// sequence number nor records the counters, so the deltas shown are
// relative to the last heartbeat sent and the next real one is unaffected.
func (s *Sender) Build(ctx context.Context) ([]byte, error) {
	s.mu.Lock()
	seq, last := s.seq, s.counters
	s.mu.Unlock()
	c := s.collect(ctx, s.store.Current(), seq, last)
	return c.msg.MarshalJSON()
}

// tick is one heartbeat: checks, build, send, and on success record the
// counters the deltas were computed against.
func (s *Sender) tick(ctx context.Context) {
	cfg := s.store.Current()
	if !cfg.HeartbeatKeySet || cfg.HeartbeatKey == "" {
		// The reference would sign with the text "None" (GAPS E2).
		s.conds.set("key", "unset", slog.LevelError, "heartbeat_key is not set: heartbeats are not sent")
		return
	}
	s.conds.clear("key", "heartbeat_key is set: sending heartbeats")

	if skip, reason := s.gated(); skip {
		s.conds.set("gate", reason, slog.LevelWarn, "heartbeats suppressed: keepalived is configured but not running", "reason", reason)
		return
	}
	s.conds.clear("gate", "keepalived is running: heartbeats resumed")

	dest, entry, ok := s.destination(ctx, cfg)
	if !ok {
		return
	}

	s.mu.Lock()
	seq, last := s.seq, s.counters
	s.seq++
	s.mu.Unlock()
	c := s.collect(ctx, cfg, seq, last)
	body, err := c.msg.MarshalJSON()
	if err != nil {
		s.log.Error("heartbeat not encoded", "err", err)
		return
	}
	pkt, err := Wrap(body, cfg.HeartbeatKey)
	if err != nil {
		s.log.Error("heartbeat not encoded", "err", err)
		return
	}
	if len(pkt) > MaxDatagram {
		s.conds.set("size", "large", slog.LevelWarn, "heartbeat exceeds the UDP datagram limit and cannot be delivered",
			"bytes", len(pkt), "limit", MaxDatagram, "listeners", len(c.msg.Listeners), "pools", len(c.msg.Pools))
	} else {
		s.conds.clear("size", "heartbeat fits in a datagram again", "bytes", len(pkt))
	}
	if err := s.send(dest, pkt); err != nil {
		s.conds.set("send:"+entry, errState(err), slog.LevelWarn, "heartbeat not sent", "dest", entry, "err", err)
		return
	}
	s.conds.clear("send:"+entry, "heartbeat sent again", "dest", entry)
	s.commit(c.next)
}

// gated reports whether heartbeats are suppressed: VRRP is configured
// but keepalived does not run.
func (s *Sender) gated() (bool, string) {
	if s.src.VRRP == nil {
		return false, ""
	}
	configured, problem := s.src.VRRP.Status()
	return configured && problem != "", problem
}

type collected struct {
	msg  Message
	next counterSet // counters to record once the message is sent
}

// collect builds the message from every source, computing deltas
// against last.
func (s *Sender) collect(ctx context.Context, cfg *config.Config, seq uint64, last counterSet) *collected {
	r := newReport()
	complete := true
	if s.src.LoadBalancers != nil {
		complete = s.collectHAProxy(ctx, s.src.LoadBalancers, r) && complete
	}
	if s.src.LVS != nil {
		complete = s.collectLVS(ctx, s.src.LVS, r) && complete
	}
	c := &collected{
		msg:  Message{ID: cfg.AmphoraID, Seq: seq, Listeners: map[string]Listener{}, Pools: r.Pools},
		next: counterSet{},
	}
	for id, l := range r.Listeners {
		c.msg.Listeners[id] = listenerEntry(l, last[id])
		c.next[id] = absolute(l)
	}
	// Listeners no longer reported are forgotten, unless a source failed:
	// its listeners must keep their values, or their next deltas would
	// count everything again.
	for id, v := range last {
		if _, seen := c.next[id]; !seen && !complete {
			c.next[id] = v
		}
	}
	return c
}

// commit records the counters a sent heartbeat was computed from and
// persists them when they changed.
func (s *Sender) commit(next counterSet) {
	s.mu.Lock()
	changed := !maps.Equal(s.counters, next)
	s.counters = next
	s.mu.Unlock()
	if !changed {
		return
	}
	if err := saveCounters(s.counterPath, next); err != nil {
		s.conds.set("persist", err.Error(), slog.LevelWarn,
			"statistics counters not saved: after an agent restart some traffic may be counted twice", "path", s.counterPath, "err", err)
		return
	}
	s.conds.clear("persist", "statistics counters saved again", "path", s.counterPath)
}

// destination picks the next usable controller, round robin over
// controller_ip_port_list. Entries that do not parse or resolve are skipped
// (and reported) so they cost no heartbeat and never stop the loop.
func (s *Sender) destination(ctx context.Context, cfg *config.Config) (netip.AddrPort, string, bool) {
	if !slices.Equal(s.dests, cfg.ControllerIPPortList) {
		s.dests = slices.Clone(cfg.ControllerIPPortList)
		s.next = 0
		clear(s.cache)
	}
	if len(s.dests) == 0 {
		s.conds.set("dest", "empty", slog.LevelError, "controller_ip_port_list is empty: heartbeats are not sent")
		return netip.AddrPort{}, "", false
	}
	for i := range len(s.dests) {
		idx := (s.next + i) % len(s.dests)
		entry := s.dests[idx]
		ap, err := s.resolve(ctx, entry)
		if err != nil {
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

// resolve turns host:port into an address: IP literals directly, names
// through the resolver (first answer, as the reference). Answers are
// reused for ResolveTTL; when a refresh fails the previous answer is kept;
// failures are remembered for a few seconds so a dead DNS server does not
// delay every heartbeat.
func (s *Sender) resolve(ctx context.Context, entry string) (netip.AddrPort, error) {
	host, port, err := config.SplitHostPort(entry)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(a.Unmap(), uint16(port)), nil
	}
	now := time.Now()
	prev, cached := s.cache[host]
	negTTL := min(s.ResolveTTL, 10*time.Second)
	switch {
	case cached && prev.err == nil && now.Sub(prev.at) < s.ResolveTTL:
		return netip.AddrPortFrom(prev.addr, uint16(port)), nil
	case cached && prev.err != nil && now.Sub(prev.at) < negTTL:
		return netip.AddrPort{}, prev.err
	}
	rctx, cancel := context.WithTimeout(ctx, s.ResolveTimeout)
	addrs, err := s.Resolver.LookupNetIP(rctx, "ip", host)
	cancel()
	if err == nil && len(addrs) == 0 {
		err = fmt.Errorf("lookup %s: no address", host)
	}
	if err != nil {
		if cached && prev.err == nil {
			s.conds.set("dns:"+host, err.Error(), slog.LevelWarn, "controller name not resolved, using its last known address",
				"host", host, "addr", prev.addr.String(), "err", err)
			return netip.AddrPortFrom(prev.addr, uint16(port)), nil
		}
		s.cache[host] = resolved{err: err, at: now}
		return netip.AddrPort{}, err
	}
	s.conds.clear("dns:"+host, "controller name resolved again", "host", host)
	a := addrs[0].Unmap()
	s.cache[host] = resolved{addr: a, at: now}
	return netip.AddrPortFrom(a, uint16(port)), nil
}

// errState is the part of a send error that identifies the condition:
// the system call error without the ephemeral source port around it.
func errState(err error) string {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Error()
	}
	return err.Error()
}

// send writes one datagram from a fresh unbound socket of the
// destination's family.
func (s *Sender) send(dest netip.AddrPort, pkt []byte) error {
	network := "udp4"
	if dest.Addr().Is6() {
		network = "udp6"
	}
	conn, err := net.ListenUDP(network, nil)
	if err != nil {
		return fmt.Errorf("open %s socket: %w", network, err)
	}
	defer conn.Close()
	if err := conn.SetWriteDeadline(time.Now().Add(s.SendTimeout)); err != nil {
		return err
	}
	if _, err := conn.WriteToUDPAddrPort(pkt, dest); err != nil {
		return fmt.Errorf("send %d bytes to %s: %w", len(pkt), dest, err)
	}
	return nil
}
