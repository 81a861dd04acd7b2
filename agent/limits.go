package agent

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Limits bound what the API spends on its clients, so that neither a
// flood of connections nor a burst of large uploads can exhaust the
// memory, disk or file descriptors of a small amphora, and the controller
// is still served meanwhile. A zero field takes its default.
type Limits struct {
	// HandshakeTimeout bounds a TLS handshake, from accept to done
	// (default 10 s; the controller's own connect timeout is 10 s).
	HandshakeTimeout time.Duration
	// MaxHandshakes is how many connections may be in their TLS
	// handshake at once (default 64). A new connection beyond it evicts
	// the oldest handshake of the client address holding the most, so
	// a flood from some addresses cannot keep others out.
	MaxHandshakes int
	// MaxConns bounds the connections past their handshake (default
	// 128). Beyond it the longest-idle one is closed; when none is idle
	// the new connection is.
	MaxConns int
	// LargeUpload is the body size above which an upload counts as large
	// (default 1 MiB); a body of unknown length is large.
	LargeUpload int64
	// MaxLargeUploads is how many large uploads are received and
	// validated at once (default 2); the others wait for their turn.
	MaxLargeUploads int
	// UploadQueueWait bounds that wait (default: [amphora_agent]
	// agent_request_read_timeout, the time the whole request may take
	// anyway): then the upload is answered 503 with a JSON body. The
	// controller waits for its answer rather than failing on a 503, and
	// retries by itself a transfer it gave up.
	UploadQueueWait time.Duration
	// MaxDocument caps the agent configuration and the agent's own
	// certificate (default 1 MiB; both are a few kilobytes), below
	// [amphora_agent] max_request_body_size.
	MaxDocument int64
	// ResponseWriteTimeout bounds the writing of a response once it has
	// started (default 2 min). It does not run while a request body is
	// received or the operation is carried out: a client that stops
	// reading its answer cannot hold the connection forever, and a slow
	// upload or a long operation is never cut.
	ResponseWriteTimeout time.Duration
	// DrainTimeout bounds how long a shutdown waits for the requests in
	// flight to finish with their own result (default 25 s); those still
	// running then see their context cancelled.
	DrainTimeout time.Duration
}

func (l Limits) withDefaults() Limits {
	set := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	set(&l.HandshakeTimeout, 10*time.Second)
	set(&l.ResponseWriteTimeout, 2*time.Minute)
	set(&l.DrainTimeout, 25*time.Second)
	if l.MaxHandshakes <= 0 {
		l.MaxHandshakes = 64
	}
	if l.MaxConns <= 0 {
		l.MaxConns = 128
	}
	if l.LargeUpload <= 0 {
		l.LargeUpload = 1 << 20
	}
	if l.MaxLargeUploads <= 0 {
		l.MaxLargeUploads = 2
	}
	if l.MaxDocument <= 0 {
		l.MaxDocument = 1 << 20
	}
	return l
}

// guardedListener accepts TCP connections and hands them to the HTTP
// server only once their TLS handshake is complete, within the limits:
// at most MaxHandshakes admitted and not yet through their handshake
// (each bounded by HandshakeTimeout), run by as many long-lived workers,
// and MaxConns established. A half-open connection or a stalled
// ClientHello therefore costs a bounded amount for a bounded time, and a
// flood costs no goroutine per connection.
type guardedListener struct {
	ln    net.Listener
	tls   *tls.Config
	lim   Limits
	log   *dropLog
	ready chan net.Conn
	done  chan struct{}
	once  sync.Once
	err   error // why accepting stopped; set before done is closed

	mu       sync.Mutex // guards the following
	work     *sync.Cond // signalled when queue grows or on stop
	stopped  bool
	queue    []*pendingConn            // admitted, waiting for a worker (may hold evicted ones)
	pending  map[string][]*pendingConn // admitted, queued or in handshake, by client address, oldest first
	npending int
	conns    map[net.Conn]*connState
}

type pendingConn struct {
	raw     net.Conn
	host    string
	since   time.Time
	evicted bool
}

type connState struct {
	idle  bool      // new (no request yet) or idle between requests
	since time.Time // of the last state change
}

func newGuardedListener(ln net.Listener, conf *tls.Config, lim Limits, log *slog.Logger) *guardedListener {
	g := &guardedListener{
		ln: ln, tls: conf, lim: lim, log: newDropLog(log),
		ready:   make(chan net.Conn),
		done:    make(chan struct{}),
		pending: map[string][]*pendingConn{},
		conns:   map[net.Conn]*connState{},
	}
	g.work = sync.NewCond(&g.mu)
	for range lim.MaxHandshakes {
		go g.worker()
	}
	go g.acceptLoop()
	return g
}

func (g *guardedListener) acceptLoop() {
	var backoff time.Duration
	for {
		raw, err := g.ln.Accept()
		if err != nil {
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
				errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) {
				// Out of descriptors or buffers: wait for some to be
				// released instead of spinning.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				g.log.drop("accept failed", "", err)
				select {
				case <-time.After(backoff):
					continue
				case <-g.done:
					return
				}
			}
			g.stop(err)
			return
		}
		backoff = 0
		g.admit(raw)
	}
}

// admit registers a new connection for a handshake, evicting one when
// MaxHandshakes are already admitted.
func (g *guardedListener) admit(raw net.Conn) {
	host := remoteHost(raw)
	pc := &pendingConn{raw: raw, host: host, since: time.Now()}
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		raw.Close()
		return
	}
	var victim *pendingConn
	if g.npending >= g.lim.MaxHandshakes {
		victim = g.evictLocked()
	}
	g.pending[host] = append(g.pending[host], pc)
	g.npending++
	if len(g.queue) >= 2*g.lim.MaxHandshakes {
		// Evicted connections still queued: drop them from the queue.
		live := g.queue[:0]
		for _, q := range g.queue {
			if !q.evicted {
				live = append(live, q)
			}
		}
		clear(g.queue[len(live):])
		g.queue = live
	}
	g.queue = append(g.queue, pc)
	g.work.Signal()
	g.mu.Unlock()
	if victim != nil {
		victim.raw.Close()
		g.log.drop("TLS handshake dropped: too many in progress", victim.host, nil)
	}
}

// evictLocked removes the oldest admitted connection of the address that
// holds the most (ties: the one waiting longest) and returns it.
func (g *guardedListener) evictLocked() *pendingConn {
	var worst string
	for host, list := range g.pending {
		w := g.pending[worst]
		if worst == "" || len(list) > len(w) || len(list) == len(w) && list[0].since.Before(w[0].since) {
			worst = host
		}
	}
	victim := g.pending[worst][0]
	victim.evicted = true
	g.removePendingLocked(victim)
	return victim
}

func (g *guardedListener) removePendingLocked(pc *pendingConn) {
	list := g.pending[pc.host]
	for i, x := range list {
		if x == pc {
			list = append(list[:i:i], list[i+1:]...)
			g.npending--
			break
		}
	}
	if len(list) == 0 {
		delete(g.pending, pc.host)
	} else {
		g.pending[pc.host] = list
	}
}

// worker runs the handshakes of queued connections, one at a time.
func (g *guardedListener) worker() {
	for {
		g.mu.Lock()
		for len(g.queue) == 0 && !g.stopped {
			g.work.Wait()
		}
		if g.stopped {
			g.mu.Unlock()
			return
		}
		pc := g.queue[0]
		g.queue[0] = nil
		g.queue = g.queue[1:]
		evicted := pc.evicted
		g.mu.Unlock()
		if !evicted {
			g.handshake(pc)
		}
	}
}

func (g *guardedListener) handshake(pc *pendingConn) {
	tc := tls.Server(pc.raw, g.tls)
	// A deadline rather than a context: HandshakeContext would start one
	// more goroutine per connection to watch the context.
	_ = pc.raw.SetDeadline(time.Now().Add(g.lim.HandshakeTimeout))
	err := tc.Handshake()
	_ = pc.raw.SetDeadline(time.Time{})
	g.mu.Lock()
	evicted := pc.evicted
	if !evicted {
		g.removePendingLocked(pc)
	}
	g.mu.Unlock()
	if err != nil {
		pc.raw.Close()
		switch {
		case evicted:
		case errors.Is(err, os.ErrDeadlineExceeded):
			g.log.drop("TLS handshake timed out", pc.host, nil)
		default:
			g.log.drop("TLS handshake refused", pc.host, err)
		}
		return
	}
	if evicted || !g.establish(tc, pc.host) {
		tc.Close()
		return
	}
	// The HTTP server's accept loop takes it at once; the worker is
	// free again.
	select {
	case g.ready <- tc:
	case <-g.done:
		g.forget(tc)
		tc.Close()
	}
}

// establish makes room for one more established connection: it closes
// the longest-idle one when MaxConns are open, or refuses tc when none
// is idle.
func (g *guardedListener) establish(tc net.Conn, host string) bool {
	g.mu.Lock()
	var victim net.Conn
	if len(g.conns) >= g.lim.MaxConns {
		var oldest time.Time
		for c, st := range g.conns {
			if st.idle && (victim == nil || st.since.Before(oldest)) {
				victim, oldest = c, st.since
			}
		}
		if victim == nil {
			g.mu.Unlock()
			tc.Close()
			g.log.drop("connection refused: too many open", host, nil)
			return false
		}
		delete(g.conns, victim)
	}
	g.conns[tc] = &connState{idle: true, since: time.Now()}
	g.mu.Unlock()
	if victim != nil {
		victim.Close()
		g.log.drop("idle connection closed: too many open", remoteHost(victim), nil)
	}
	return true
}

func (g *guardedListener) forget(c net.Conn) {
	g.mu.Lock()
	delete(g.conns, c)
	g.mu.Unlock()
}

// connState follows the HTTP server's view of the established
// connections (http.Server.ConnState).
func (g *guardedListener) connState(c net.Conn, st http.ConnState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch st {
	case http.StateClosed, http.StateHijacked:
		delete(g.conns, c)
	default:
		if cs, ok := g.conns[c]; ok {
			cs.idle = st != http.StateActive
			cs.since = time.Now()
		}
	}
}

// counts returns the handshakes in progress and the established
// connections.
func (g *guardedListener) counts() (pending, established int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.npending, len(g.conns)
}

func (g *guardedListener) Accept() (net.Conn, error) {
	select {
	case c := <-g.ready:
		return c, nil
	case <-g.done:
		return nil, g.err
	}
}

func (g *guardedListener) stop(err error) {
	g.once.Do(func() {
		g.mu.Lock()
		g.err = err
		g.stopped = true
		g.work.Broadcast()
		close(g.done)
		var open []net.Conn
		for _, list := range g.pending {
			for _, pc := range list {
				pc.evicted = true
				open = append(open, pc.raw)
			}
		}
		g.pending, g.npending, g.queue = map[string][]*pendingConn{}, 0, nil
		g.mu.Unlock()
		for _, c := range open {
			c.Close()
		}
	})
}

// Close stops accepting and drops the handshakes in progress; the
// established connections belong to the HTTP server.
func (g *guardedListener) Close() error {
	g.stop(net.ErrClosed)
	return g.ln.Close()
}

func (g *guardedListener) Addr() net.Addr { return g.ln.Addr() }

func remoteHost(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	return host
}

// dropLog reports refused, dropped and timed-out connections: the first
// few of every window one by one, the rest as counts when the window
// closes, so a flood cannot flood the log too.
type dropLog struct {
	log *slog.Logger

	mu         sync.Mutex // guards the following
	start      time.Time
	logged     int
	suppressed map[string]int
	flushing   bool
}

const (
	dropLogWindow = 10 * time.Second
	dropLogBurst  = 5
)

func newDropLog(log *slog.Logger) *dropLog {
	return &dropLog{log: log, suppressed: map[string]int{}}
}

func (d *dropLog) drop(what, remote string, err error) {
	d.mu.Lock()
	now := time.Now()
	if now.Sub(d.start) > dropLogWindow && !d.flushing {
		d.start, d.logged = now, 0
	}
	if d.logged < dropLogBurst {
		d.logged++
		d.mu.Unlock()
		attrs := []any{"remote", remote}
		if err != nil {
			attrs = append(attrs, "err", err)
		}
		d.log.Info(what, attrs...)
		return
	}
	d.suppressed[what]++
	if !d.flushing {
		d.flushing = true
		time.AfterFunc(time.Until(d.start.Add(dropLogWindow)), d.flush)
	}
	d.mu.Unlock()
}

func (d *dropLog) flush() {
	d.mu.Lock()
	counts := d.suppressed
	d.suppressed = map[string]int{}
	d.flushing = false
	d.start, d.logged = time.Now(), 0
	d.mu.Unlock()
	kinds := make([]string, 0, len(counts))
	total := 0
	for k, n := range counts {
		kinds = append(kinds, fmt.Sprintf("%s: %d", k, n))
		total += n
	}
	sort.Strings(kinds)
	d.log.Warn("connections refused or dropped (not logged one by one)", "count", total,
		"window", dropLogWindow.String(), "by_reason", strings.Join(kinds, "; "))
}
