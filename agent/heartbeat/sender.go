package heartbeat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
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

// MaxDatagram is the largest UDP payload over IPv4: the sender reduces a
// message until its datagram fits (see Detail).
const MaxDatagram = 65507

// Sender builds and sends heartbeats. Create it with New; Run is its loop.
// Build and Preview may be called while Run runs (the Sources must then
// be safe for concurrent use).
//
// Every heartbeat has a budget of three quarters of the interval: the
// sources (each load balancer's stats socket, the LVS listeners) and the
// controller name lookups run concurrently within it, and whatever has
// not answered by then is left out of that heartbeat alone, so neither a
// hung haproxy nor a dead DNS server stretches the period the controller
// sees.
type Sender struct {
	store       *config.Store
	src         Sources
	log         *slog.Logger
	counterPath string
	conds       *condLog

	// Tunables, set by New; change them before Run only.
	QueryTimeout   time.Duration // one stats socket query, within the budget
	ResolveTimeout time.Duration // one host name lookup (it may outlive a heartbeat)
	SendTimeout    time.Duration
	Resolver       *net.Resolver

	mu       sync.Mutex // guards the following
	seq      uint64
	counters counterSet // last absolute values reported (and persisted)

	dns   dnsCache
	stuck [numSources]atomic.Pointer[sourceRun] // the last run of a source a heartbeat stopped waiting for
	stats senderStats

	// Used by the Run goroutine only.
	dests []string // controller_ip_port_list the rotation is built on
	next  int      // index in dests of the next destination
	enc   encoder
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
		SendTimeout:    time.Second,
		Resolver:       net.DefaultResolver,
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
	sw := newStatsWriter(s.store.Current().BasePath)
	defer s.writeStats(sw, true)
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
		s.writeStats(sw, false)
		// The interval runs from the start of a heartbeat, so collection
		// time does not stretch the period.
		timer.Reset(time.Until(last.Add(s.interval())))
	}
}

// writeStats leaves the counts for "amphora-agent status" (StatsFile).
func (s *Sender) writeStats(w *statsWriter, force bool) {
	if err := w.maybeWrite(s.Stats(), force); err != nil {
		s.conds.set("stats", err.Error(), slog.LevelWarn, "heartbeat counts not saved for amphora-agent status", "path", w.path, "err", err)
		return
	}
	s.conds.clear("stats", "heartbeat counts saved again", "path", w.path)
}

// minInterval guards the loop against a zero or negative interval (the
// configuration refuses them; a Store can still be handed anything).
const minInterval = 100 * time.Millisecond

func (s *Sender) interval() time.Duration {
	return max(s.store.Current().HeartbeatInterval, minInterval)
}

// round holds the deadlines of one heartbeat: sources must answer by
// sources; the heartbeat is sent by send, within the interval.
type round struct {
	sources, send time.Time
}

func (s *Sender) newRound(cfg *config.Config) round {
	now := time.Now()
	budget := max(cfg.HeartbeatInterval, minInterval) * 3 / 4
	return round{sources: now.Add(budget * 4 / 5), send: now.Add(budget)}
}

// Preview is the heartbeat the sender would send now.
type Preview struct {
	JSON     []byte // the message's text (reduced when it did not fit)
	Datagram int    // bytes of its datagram (0 without a heartbeat_key)
	Detail   Detail // how much of it was kept
	FullJSON int    // bytes of the whole message's text
	Fits     bool   // false: too large even with listeners only
	LeftOut  []string
}

// Build returns the JSON text of the heartbeat the sender would send now,
// for inspection (amphora-agent heartbeat --print). It neither consumes a
// sequence number nor records the counters, so the deltas shown are
// relative to the last heartbeat sent and the next real one is unaffected.
func (s *Sender) Build(ctx context.Context) ([]byte, error) {
	p, err := s.Preview(ctx)
	if err != nil {
		return nil, err
	}
	return p.JSON, nil
}

// Preview is Build with what the sender knows about the message: its
// datagram size, how much detail fits, what was left out and why.
func (s *Sender) Preview(ctx context.Context) (*Preview, error) {
	cfg := s.store.Current()
	s.mu.Lock()
	seq, last := s.seq, s.counters
	s.mu.Unlock()
	g := s.gather(ctx, s.newRound(cfg))
	msg, _ := buildMessage(cfg, seq, last, g)
	p := &Preview{Detail: DetailFull, Fits: true, LeftOut: g.leftOut}
	if cfg.HeartbeatKey == "" {
		p.JSON = msg.AppendJSON(nil)
		p.FullJSON = len(p.JSON)
		return p, nil
	}
	e := encoders.Get().(*encoder)
	defer encoders.Put(e)
	f, err := e.fit(msg, cfg.HeartbeatKey, MaxDatagram)
	if err != nil {
		return nil, err
	}
	p.JSON, p.Datagram, p.Detail, p.FullJSON, p.Fits = bytes.Clone(f.json), len(f.pkt), f.detail, f.fullJSON, f.fits
	return p, nil
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

	s.rotation(cfg)
	if len(s.dests) == 0 {
		s.conds.set("dest", "empty", slog.LevelError, "controller_ip_port_list is empty: heartbeats are not sent")
		return
	}
	rd := s.newRound(cfg)
	// Names are looked up while the sources are read.
	lookups := s.lookups(ctx)
	g := s.gather(ctx, rd)
	dest, entry, ok := s.destination(ctx, rd, lookups)
	if !ok {
		return
	}

	s.mu.Lock()
	seq, last := s.seq, s.counters
	s.seq++
	s.mu.Unlock()
	msg, next := buildMessage(cfg, seq, last, g)
	f, err := s.enc.fit(msg, cfg.HeartbeatKey, MaxDatagram)
	if err != nil {
		s.log.Error("heartbeat not encoded", "err", err)
		return
	}
	s.noteFit(msg, f)
	if err := s.send(dest, f.pkt); err != nil {
		s.stats.sendFailed.Add(1)
		s.conds.set("send:"+entry, errState(err), slog.LevelWarn, "heartbeat not sent", "dest", entry, "err", err)
		return
	}
	s.stats.sent.Add(1)
	s.conds.clear("send:"+entry, "heartbeat sent again", "dest", entry)
	s.commit(next)
}

// noteFit logs and counts a heartbeat that did not fit in full.
func (s *Sender) noteFit(msg *Message, f fitted) {
	s.stats.lastDetail.Store(int64(f.detail))
	members := 0
	for _, p := range msg.Pools {
		members += len(p.Members)
	}
	switch {
	case !f.fits:
		s.stats.unsendable.Add(1)
		s.conds.set("size", "unsendable", slog.LevelError,
			"heartbeat exceeds the UDP datagram limit even with listeners only: it cannot be delivered",
			"bytes", len(f.pkt), "limit", MaxDatagram, "listeners", len(msg.Listeners), "pools", len(msg.Pools), "members", members)
	case f.detail >= DetailImplied:
		s.stats.degraded.Add(1)
		s.conds.set("size", f.detail.String(), slog.LevelWarn,
			"heartbeat too large for one datagram: sent with less detail (every listener kept)",
			"detail", f.detail.String(), "bytes", len(f.pkt), "full_bytes", f.fullPkt, "limit", MaxDatagram,
			"listeners", len(msg.Listeners), "pools", len(msg.Pools), "members", members,
			"reduced_heartbeats", s.stats.degraded.Load())
	default:
		s.conds.clear("size", "heartbeat fits in a datagram again", "bytes", len(f.pkt))
	}
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

// The sources of a heartbeat, each read in its own goroutine.
const (
	sourceHAProxy = iota
	sourceLVS
	numSources
)

var sourceNames = [numSources]string{"haproxy load balancers", "LVS listeners"}

// sourceRun is one run of a source; done is set when it returns.
type sourceRun struct{ done atomic.Bool }

// gathered is what the sources reported within a heartbeat's budget.
type gathered struct {
	rep      *Report
	complete bool     // every source and load balancer answered
	leftOut  []string // what is missing and why
}

// gather reads every source concurrently. A source must answer by
// rd.sources; one that has not returned by rd.send is left out of this
// heartbeat (and not started again while it still runs).
func (s *Sender) gather(ctx context.Context, rd round) gathered {
	sctx, cancel := context.WithDeadline(ctx, rd.sources)
	defer cancel()
	type result struct {
		rep    *Report
		missed []string
		busy   bool
	}
	var (
		chans [numSources]chan result
		runs  [numSources]*sourceRun
	)
	for i, run := range [numSources]func(context.Context) (*Report, []string){s.collectHAProxy, s.collectLVS} {
		if i == sourceHAProxy && s.src.LoadBalancers == nil || i == sourceLVS && s.src.LVS == nil {
			continue
		}
		ch := make(chan result, 1)
		chans[i] = ch
		if r := s.stuck[i].Load(); r != nil && !r.done.Load() {
			ch <- result{missed: []string{sourceNames[i] + ": still busy with an earlier heartbeat"}, busy: true}
			continue
		}
		runs[i] = &sourceRun{}
		go func(r *sourceRun) {
			rep, missed := run(sctx)
			r.done.Store(true)
			ch <- result{rep: rep, missed: missed}
		}(runs[i])
	}
	g := gathered{complete: true}
	wait := time.NewTimer(time.Until(rd.send))
	defer wait.Stop()
	for i, ch := range chans {
		if ch == nil {
			continue
		}
		select {
		case r := <-ch:
			switch {
			case r.rep == nil:
			case g.rep == nil: // the first source's report is taken as it is
				g.rep = r.rep
			default:
				g.rep.add(r.rep)
			}
			if len(r.missed) > 0 {
				g.complete = false
				g.leftOut = append(g.leftOut, r.missed...)
			}
			if r.busy {
				s.stats.lateSources.Add(1)
				s.conds.set("late:"+sourceNames[i], "busy", slog.LevelError,
					"heartbeat source still busy with an earlier heartbeat: its listeners are left out", "source", sourceNames[i])
			} else {
				s.conds.clear("late:"+sourceNames[i], "heartbeat source answering in time again", "source", sourceNames[i])
			}
		case <-wait.C:
			// Abandoned: no new run of this source starts while this one
			// still runs.
			s.stuck[i].Store(runs[i])
			g.complete = false
			g.leftOut = append(g.leftOut, sourceNames[i]+": no answer within the heartbeat's budget")
			s.stats.lateSources.Add(1)
			s.conds.set("late:"+sourceNames[i], "late", slog.LevelError,
				"heartbeat source did not answer within the heartbeat's budget: its listeners are left out", "source", sourceNames[i])
			// The timer fired: later sources get no more time either.
			wait.Reset(0)
		}
	}
	if g.rep == nil {
		g.rep = newReport()
	}
	return g
}

// buildMessage makes the message from what was gathered, computing deltas
// against last; it also returns the counters to record once it is sent.
func buildMessage(cfg *config.Config, seq uint64, last counterSet, g gathered) (*Message, counterSet) {
	msg := &Message{ID: cfg.AmphoraID, Seq: seq, Listeners: make(map[string]Listener, len(g.rep.Listeners)), Pools: g.rep.Pools}
	next := make(counterSet, len(g.rep.Listeners))
	for id, l := range g.rep.Listeners {
		msg.Listeners[id] = listenerEntry(l, last[id])
		next[id] = absolute(l)
	}
	// Listeners no longer reported are forgotten, unless a source failed:
	// its listeners must keep their values, or their next deltas would
	// count everything again.
	for id, v := range last {
		if _, seen := next[id]; !seen && !g.complete {
			next[id] = v
		}
	}
	return msg, next
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

// senderStats count what went wrong since the sender started.
type senderStats struct {
	sent, sendFailed        atomic.Uint64
	degraded, unsendable    atomic.Uint64
	lbFailures, lateSources atomic.Uint64
	skippedDests            atomic.Uint64
	lastDetail              atomic.Int64
}

// Stats are the sender's counts since it started.
type Stats struct {
	Sent, SendFailed uint64
	// Degraded heartbeats were sent with less than full detail;
	// Unsendable ones did not fit even with listeners only.
	Degraded, Unsendable uint64
	// LBFailures counts load balancers left out of a heartbeat (their
	// stats socket failed or did not answer in time); LateSources the
	// sources that did not answer within a heartbeat's budget.
	LBFailures, LateSources uint64
	// SkippedDestinations counts controller entries passed over because
	// they are malformed or their name did not resolve.
	SkippedDestinations uint64
	LastDetail          Detail
}

// Stats returns the counts since the sender started.
func (s *Sender) Stats() Stats {
	return Stats{
		Sent: s.stats.sent.Load(), SendFailed: s.stats.sendFailed.Load(),
		Degraded: s.stats.degraded.Load(), Unsendable: s.stats.unsendable.Load(),
		LBFailures: s.stats.lbFailures.Load(), LateSources: s.stats.lateSources.Load(),
		SkippedDestinations: s.stats.skippedDests.Load(), LastDetail: Detail(s.stats.lastDetail.Load()),
	}
}
