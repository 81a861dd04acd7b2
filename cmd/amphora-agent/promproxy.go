package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/haproxy/promproxy"
	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/netns"
	"github.com/octavia-go/amphora-agent/service"
)

// runPrometheusProxy is "amphora-agent prometheus-proxy": the service
// behind PROMETHEUS listeners (package promproxy). It runs inside the
// data-plane namespace (its unit starts it with "ip netns exec") and
// serves 127.0.0.1:9102 until SIGTERM.
func runPrometheusProxy(ctx context.Context, g *globals, args []string) error {
	listen, exporter, pidFile := promproxy.DefaultListen, promproxy.DefaultExporter, ""
	if _, err := subFlags(g, "prometheus-proxy", args, func(fs *flag.FlagSet) {
		fs.StringVar(&listen, "listen", listen, "address to serve the Octavia metrics on")
		fs.StringVar(&exporter, "exporter", exporter, "haproxy's internal Prometheus exporter")
		fs.StringVar(&pidFile, "pid-file", "", "write the process id there while running")
	}); err != nil {
		return err
	}
	cfg, _, err := loadConfig(g)
	if err != nil {
		return err
	}
	logs := startLogging(g, cfg, promproxy.ServiceName)
	defer closeLogging(logs)
	log := logs.Logger()
	if !inNamespace(cfg.Namespace) {
		log.Warn("the prometheus proxy does not run inside the data-plane namespace; haproxy's exporter and listeners are there",
			"namespace", cfg.Namespace)
	}
	store := config.NewStore(cfg)
	go followConfigFile(ctx, store, log)
	go followSyslogSettings(ctx, store, logs)
	lbs := haproxy.NewInventory(cfg.BasePath, nil, log)
	p := promproxy.New(promproxy.Options{
		Exporter: exporter,
		Configs: func() []string {
			var out []string
			for _, id := range lbs.List() {
				out = append(out, lbs.ConfigPath(id))
			}
			return out
		},
		Log: log,
	})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	if pidFile != "" {
		if err := fsutil.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			ln.Close()
			return err
		}
		defer fsutil.Remove(pidFile)
	}
	log.Info("prometheus proxy listening", "addr", ln.Addr().String(), "exporter", exporter, "version", version)
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("systemd readiness notification failed", "err", err)
	}
	err = p.Serve(ctx, ln)
	st := p.Stats()
	log.Info("prometheus proxy stopped", "scrapes", st.Scrapes, "failed_scrapes", st.Failures)
	return err
}

// inNamespace reports whether this process's network namespace is the
// named one.
func inNamespace(name string) bool {
	var self, named syscall.Stat_t
	if syscall.Stat("/proc/self/ns/net", &self) != nil || syscall.Stat(filepath.Join("/run/netns", name), &named) != nil {
		return false
	}
	return self.Dev == named.Dev && self.Ino == named.Ino
}

// followConfigFile re-reads the configuration files when they change
// (PUT /1.0/config rewrites the first), so the proxy's syslog settings
// follow the agent's.
func followConfigFile(ctx context.Context, store *config.Store, log *slog.Logger) {
	files := store.Current().Files
	if len(files) == 0 {
		return
	}
	stamp := func() string {
		var b strings.Builder
		for _, f := range files {
			if fi, err := os.Stat(f); err == nil {
				fmt.Fprintf(&b, "%d/%d;", fi.Size(), fi.ModTime().UnixNano())
			}
		}
		return b.String()
	}
	last := stamp()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := stamp()
		if now == last {
			continue
		}
		last = now
		next, _, err := config.Load(files...)
		if err != nil {
			log.Warn("configuration not re-read", "err", err)
			continue
		}
		if cur := store.Current(); !cur.MutableEqual(next) {
			store.Update(cur.WithMutable(next))
		}
	}
}

// proxyService runs the Prometheus proxy service, under either service
// manager, while at least one configured load balancer has a PROMETHEUS
// listener (its haproxy configuration declares the internal exporter)
// and the data-plane namespace exists; otherwise it is stopped. An
// amphora without PROMETHEUS listeners thus has no process and no socket
// for them. A unit file not written by the agent (the one the .deb
// ships) is used as it is.
type proxyService struct {
	store     *config.Store
	units     service.Manager
	netnsUnit string // the namespace's unit under systemd, else ""
	lbs       *haproxy.Inventory
	agentArgv []string
	log       *slog.Logger

	mu sync.Mutex // serializes Sync
}

// loadBalancersWithProxy lists the load balancers with a PROMETHEUS listener.
func loadBalancersWithProxy(lbs *haproxy.Inventory) []string {
	var out []string
	for _, id := range lbs.List() {
		if promproxy.HasExporter(lbs.ConfigPath(id)) {
			out = append(out, id)
		}
	}
	return out
}

// Sync starts or stops the proxy as the load balancers need it. Errors
// are logged: the load-balancer operation that triggered it succeeded.
func (p *proxyService) Sync(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.store.Current()
	users := loadBalancersWithProxy(p.lbs)
	_, nsErr := os.Stat(filepath.Join("/run/netns", c.Namespace))
	if len(users) == 0 || nsErr != nil {
		st, err := p.units.State(ctx, promproxy.ServiceName)
		if err != nil || !st.Active {
			return
		}
		if err := p.units.Stop(ctx, promproxy.ServiceName); err != nil {
			p.log.Error("prometheus proxy not stopped", "err", err)
			return
		}
		p.log.Info("prometheus proxy stopped: no load balancer has a PROMETHEUS listener")
		return
	}
	if err := p.install(ctx, c); err != nil {
		p.log.Error("prometheus proxy service not installed", "err", err)
		return
	}
	if err := p.units.Start(ctx, promproxy.ServiceName); err != nil {
		p.log.Error("prometheus proxy not started", "err", err)
		return
	}
	p.log.Debug("prometheus proxy running", "load_balancers", strings.Join(users, ","))
}

// install writes the proxy's service. Under systemd a unit file the agent
// did not write (the one the .deb ships) is kept as it is: the service
// manager never overwrites one.
func (p *proxyService) install(ctx context.Context, c *config.Config) error {
	svc, err := promproxy.ServiceParams{
		IPCmd: "/sbin/ip", Namespace: c.Namespace, NetnsUnit: netns.UnitName,
		Agent: p.agentArgv, PIDFile: filepath.Join(c.BasePath, promproxy.ServiceName+".pid"),
	}.Service()
	if err != nil {
		return err
	}
	if p.netnsUnit != "" {
		svc.PIDFile = ""
		svc.Argv = nil
	}
	_, err = p.units.Install(ctx, svc)
	return err
}

// lbsWithProxy is the load-balancer manager the REST API drives, with
// the proxy brought in line after every change.
type lbsWithProxy struct {
	*haproxy.Manager
	proxy *proxyService
}

func (l lbsWithProxy) Upload(ctx context.Context, amphoraID, lbID string, body io.Reader) (string, error) {
	sum, err := l.Manager.Upload(ctx, amphoraID, lbID, body)
	l.proxy.Sync(ctx)
	return sum, err
}

func (l lbsWithProxy) Action(ctx context.Context, lbID, action string) (string, error) {
	detail, err := l.Manager.Action(ctx, lbID, action)
	l.proxy.Sync(ctx)
	return detail, err
}

func (l lbsWithProxy) Delete(ctx context.Context, lbID string) error {
	err := l.Manager.Delete(ctx, lbID)
	l.proxy.Sync(ctx)
	return err
}

// probeProxy scrapes the proxy once from inside the namespace, as a
// tenant's listener would, and describes the answer.
func probeProxy(ctx context.Context, namespace string) string {
	ns, err := netns.OpenNamespace(namespace)
	if err != nil {
		return fmt.Sprintf("namespace %s: %v", namespace, err)
	}
	defer ns.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var result string
	start := time.Now()
	err = ns.Do(func() error {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", promproxy.DefaultListen)
		if err != nil {
			return err
		}
		defer conn.Close()
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(dl)
		}
		req, _ := http.NewRequest(http.MethodGet, "http://"+promproxy.DefaultListen+"/metrics", nil)
		if err := req.Write(conn); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			result = fmt.Sprintf("answers %s (haproxy's exporter on %s unreachable)", resp.Status, promproxy.DefaultExporter)
			return nil
		}
		series, err := countSeries(resp.Body)
		if err != nil {
			return err
		}
		result = fmt.Sprintf("answering: %d series in %d ms", series, time.Since(start).Milliseconds())
		return nil
	})
	if errors.Is(err, syscall.ECONNREFUSED) {
		return "NOT listening on " + promproxy.DefaultListen
	}
	if err != nil {
		return "scrape failed: " + err.Error()
	}
	return result
}

func countSeries(r io.Reader) (int, error) {
	n := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if line := sc.Bytes(); len(line) > 0 && line[0] != '#' {
			n++
		}
	}
	return n, sc.Err()
}

// printPrometheusProxy is the status section of the proxy.
func printPrometheusProxy(ctx context.Context, w io.Writer, c *config.Config, lbs *haproxy.Inventory) {
	users := loadBalancersWithProxy(lbs)
	if len(users) == 0 {
		fmt.Fprintln(w, "not needed: no load balancer has a PROMETHEUS listener")
		if strings.HasPrefix(probeProxy(ctx, c.Namespace), "answering") {
			fmt.Fprintln(w, "(but a proxy still answers on "+promproxy.DefaultListen+")")
		}
		return
	}
	fmt.Fprintf(w, "needed by %s\n", strings.Join(users, ", "))
	fmt.Fprintf(w, "%s in %s: %s\n", promproxy.DefaultListen, c.Namespace, probeProxy(ctx, c.Namespace))
}
