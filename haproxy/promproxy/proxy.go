// Package promproxy is the amphora's Prometheus proxy: the service behind
// a tenant's PROMETHEUS listener.
//
// The controller renders, for a load balancer with a PROMETHEUS listener,
// an internal haproxy exporter on 127.0.0.1:9101 and a backend sending
// the listener's requests to 127.0.0.1:9102, inside the data-plane
// namespace. The proxy listens there, reads haproxy's exporter and
// answers with Octavia's metric names and labels (octavia_loadbalancer_*,
// octavia_listener_*, octavia_pool_*, octavia_member_*; proxy= and
// server= become listener=, pool= and member=) preceded by two gauges of
// its own, octavia_loadbalancer_cpu and octavia_loadbalancer_memory —
// the output of the reference's prometheus-proxy, line for line.
//
// Unlike the reference it streams: one exporter line is held at a time,
// whatever the number of members. It answers 502 when the exporter cannot
// be read, never shows the internal exporter frontend and backend, bounds
// concurrent scrapes and their duration, and with several load balancers
// on one amphora answers each scrape with the metrics of the load
// balancer it came through (see owner.go), where the reference returns
// whichever haproxy the kernel picked.
package promproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"
)

// Addresses the controller's haproxy configuration uses.
const (
	DefaultListen   = "127.0.0.1:9102" // backend prometheus-exporter-internal
	DefaultExporter = "127.0.0.1:9101" // frontend prometheus-exporter-internal-endpoint
	// ExporterFrontend is the internal exporter's frontend name; a
	// configuration containing it has a PROMETHEUS listener.
	ExporterFrontend = "prometheus-exporter-internal-endpoint"
)

// Options configure a Proxy; zero values take the defaults noted.
type Options struct {
	// Exporter is haproxy's internal exporter (DefaultExporter).
	Exporter string
	// Configs lists the haproxy configuration files of the amphora's load
	// balancers. When more than one has the internal exporter, each
	// scrape is answered from the exporter of the load balancer it came
	// through. nil: one exporter is assumed.
	Configs func() []string
	// MaxConcurrent bounds the scrapes read from haproxy at once (4);
	// more wait up to QueueWait (5s), then get 503.
	MaxConcurrent int
	QueueWait     time.Duration
	// Timeout bounds one scrape, exporter read included (30s).
	Timeout time.Duration
	// MaxConns bounds the open client connections (64).
	MaxConns int
	Log      *slog.Logger
	// Root is where proc/ and sys/ are read from ("/"; tests).
	Root string
}

// Proxy serves the translated metrics. It is an http.Handler.
type Proxy struct {
	opts  Options
	log   *slog.Logger
	sem   chan struct{}
	stat  sysStat
	procs procFS

	scrapes, failures atomic.Uint64

	mu        sync.Mutex // guards the following
	failing   bool       // the last scrape could not read the exporter
	failedRun uint64     // failures in the current failing run
	lastErr   string
	cfgCache  map[string]cfgState // config path -> has the exporter
}

type cfgState struct {
	key      string // size/mtime
	exporter bool
}

// New returns a Proxy.
func New(o Options) *Proxy {
	if o.Exporter == "" {
		o.Exporter = DefaultExporter
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 4
	}
	if o.QueueWait <= 0 {
		o.QueueWait = 5 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 64
	}
	if o.Root == "" {
		o.Root = "/"
	}
	p := &Proxy{
		opts:     o,
		log:      o.Log,
		sem:      make(chan struct{}, o.MaxConcurrent),
		stat:     sysStat{root: o.Root},
		procs:    procFS{root: strings.TrimSuffix(o.Root, "/") + "/proc"},
		cfgCache: map[string]cfgState{},
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	return p
}

// Stats are the proxy's counters.
type Stats struct {
	Scrapes  uint64 // answered (200)
	Failures uint64 // 502: the exporter could not be read
	LastErr  string
}

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Scrapes: p.scrapes.Load(), Failures: p.failures.Load(), LastErr: p.lastErr}
}

// Serve answers scrapes on ln until ctx ends, then lets running scrapes
// finish (at most 5 s).
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	}()
	err := srv.Serve(netutil.LimitListener(ln, p.opts.MaxConns))
	if errors.Is(err, http.ErrServerClosed) {
		<-done
		return nil
	}
	return err
}

// ServeHTTP answers GET (any path, as the reference) and HEAD.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	wait := time.NewTimer(p.opts.QueueWait)
	defer wait.Stop()
	select {
	case p.sem <- struct{}{}:
		defer func() { <-p.sem }()
	case <-wait.C:
		http.Error(w, "too many concurrent scrapes", http.StatusServiceUnavailable)
		return
	case <-r.Context().Done():
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), p.opts.Timeout)
	defer cancel()

	up, err := p.open(ctx, r)
	if err != nil {
		p.failed(err)
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	defer up.Close()
	p.succeeded()

	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Type", "text/plain; version=0.0.4")
	h.Set("Connection", "close")
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	gauges, gerr := p.stat.appendGauges(make([]byte, 0, 512))
	if gerr != nil {
		p.log.Warn("prometheus proxy: gauge left out", "err", gerr)
	}
	_, _ = bw.Write(gauges)
	err = Translate(bw, up.body)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		// The status is sent: cut the response short so the scraper
		// sees a failed scrape, not a partial one.
		p.log.Warn("prometheus proxy: scrape cut short", "err", err)
		panic(http.ErrAbortHandler)
	}
}

func (p *Proxy) failed(err error) {
	p.failures.Add(1)
	p.mu.Lock()
	first := !p.failing
	p.failing = true
	p.failedRun++
	p.lastErr = err.Error()
	p.mu.Unlock()
	if first {
		p.log.Warn("prometheus proxy: haproxy's exporter unreachable, answering 502", "exporter", p.opts.Exporter, "err", err)
	} else {
		p.log.Debug("prometheus proxy: exporter still unreachable", "err", err)
	}
}

func (p *Proxy) succeeded() {
	p.scrapes.Add(1)
	p.mu.Lock()
	was, run := p.failing, p.failedRun
	p.failing, p.failedRun = false, 0
	p.mu.Unlock()
	if was {
		p.log.Info("prometheus proxy: haproxy's exporter answers again", "exporter", p.opts.Exporter, "failed_scrapes", run)
	}
}

// upstream is an exporter response being read.
type upstream struct {
	conn net.Conn
	body io.ReadCloser
}

func (u *upstream) Close() {
	u.body.Close()
	u.conn.Close()
}

// maxAttempts bounds the connections tried to reach one load balancer's
// exporter among several sharing the port (each attempt lands on one of
// n exporters at random: with 2, 16 misses in a row happen once in 65536
// scrapes).
const maxAttempts = 16

// open connects to the exporter and reads its response header. With
// several exporters, the one of the load balancer the scrape came
// through is reached.
func (p *Proxy) open(ctx context.Context, r *http.Request) (*upstream, error) {
	target := p.scrapedLoadBalancer(r)
	if target == "" {
		return p.fetch(ctx)
	}
	for attempt := 1; ; attempt++ {
		up, err := p.fetch(ctx)
		if err != nil {
			return nil, err
		}
		// haproxy's end of the connection: its address is our peer's
		configs, err := p.peerConfigs(up.conn.RemoteAddr(), up.conn.LocalAddr())
		if err == nil && slices.Contains(configs, target) {
			return up, nil
		}
		up.Close()
		if attempt == maxAttempts {
			return nil, fmt.Errorf("the exporter of %s did not answer in %d connections (other load balancers' exporters share %s)", target, maxAttempts, p.opts.Exporter)
		}
	}
}

// fetch opens one connection to the exporter and sends GET /metrics,
// keeping the connection open (so that the socket at haproxy's end
// stays in the socket table while we look at it).
func (p *Proxy) fetch(ctx context.Context) (*upstream, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", p.opts.Exporter)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.opts.Exporter+"/metrics", nil)
	req.Header.Set("User-Agent", "amphora-agent prometheus-proxy")
	if err := req.Write(conn); err != nil {
		stop()
		conn.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 32<<10), req)
	if err != nil {
		stop()
		conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		stop()
		conn.Close()
		return nil, fmt.Errorf("exporter answered %s", resp.Status)
	}
	return &upstream{conn: conn, body: stopOnClose{resp.Body, stop}}, nil
}

type stopOnClose struct {
	io.ReadCloser
	stop func() bool
}

func (s stopOnClose) Close() error {
	s.stop()
	return s.ReadCloser.Close()
}

// scrapedLoadBalancer returns the configuration file of the load balancer
// a scrape came through, when it matters: several configurations have
// the internal exporter and the client is one of their haproxy
// processes. "" otherwise (one exporter, or a local client such as an
// operator's curl, answered like the reference: by whichever exporter
// takes the connection).
func (p *Proxy) scrapedLoadBalancer(r *http.Request) string {
	exporters := p.exporterConfigs()
	if len(exporters) < 2 {
		return ""
	}
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	remote, err := net.ResolveTCPAddr("tcp", r.RemoteAddr)
	if local == nil || err != nil {
		return ""
	}
	// the client's socket: its local address is our remote one
	configs, err := p.peerConfigs(remote, local)
	if err != nil {
		p.log.Debug("prometheus proxy: scrape from a local client", "remote", r.RemoteAddr, "err", err)
		return ""
	}
	for _, c := range configs {
		if slices.Contains(exporters, c) {
			return c
		}
	}
	return ""
}

// peerConfigs returns the configuration files of the haproxy process
// holding the TCP socket whose own address is local and whose peer is
// remote.
func (p *Proxy) peerConfigs(local, remote net.Addr) ([]string, error) {
	l, err1 := netip.ParseAddrPort(local.String())
	r, err2 := netip.ParseAddrPort(remote.String())
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("addresses %s, %s: %w", local, remote, errors.Join(err1, err2))
	}
	ino, err := p.procs.socketInode(l, r)
	if err != nil {
		return nil, err
	}
	return p.procs.haproxyHolding(ino)
}

// exporterConfigs returns the configuration files that have the internal
// exporter, re-reading only the files that changed.
func (p *Proxy) exporterConfigs() []string {
	if p.opts.Configs == nil {
		return nil
	}
	paths := p.opts.Configs()
	var out []string
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := make(map[string]bool, len(paths))
	for _, path := range paths {
		seen[path] = true
		fi, err := os.Stat(path)
		if err != nil {
			continue
		}
		key := fmt.Sprintf("%d/%d", fi.Size(), fi.ModTime().UnixNano())
		st, ok := p.cfgCache[path]
		if !ok || st.key != key {
			st = cfgState{key: key, exporter: HasExporter(path)}
			p.cfgCache[path] = st
		}
		if st.exporter {
			out = append(out, path)
		}
	}
	for path := range p.cfgCache {
		if !seen[path] {
			delete(p.cfgCache, path)
		}
	}
	return out
}

// HasExporter reports whether the haproxy configuration file declares
// the internal exporter frontend (the load balancer has a PROMETHEUS
// listener).
func HasExporter(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "frontend" && fields[1] == ExporterFrontend {
			return true
		}
	}
	return false
}
