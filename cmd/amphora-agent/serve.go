package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/octavia-go/amphora-agent/agent"
	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/agent/heartbeat"
	"github.com/octavia-go/amphora-agent/agent/hostinfo"
	"github.com/octavia-go/amphora-agent/certs"
	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/internal/memtrim"
	"github.com/octavia-go/amphora-agent/internal/spool"
	"github.com/octavia-go/amphora-agent/netns"
)

func runServe(ctx context.Context, g *globals, args []string) error {
	procs := oneProcessor()
	if _, err := subFlags(g, "serve", args, nil); err != nil {
		return err
	}
	cfg, _, err := loadConfig(g)
	if err != nil {
		return err
	}
	logs := startLogging(g, cfg, "amphora-agent")
	defer closeLogging(logs)
	log := logs.Logger()
	log.Debug("Go scheduler", "gomaxprocs", procs, "cpus", runtime.NumCPU())
	// A bad controller entry never stops the agent (issue 13, defect 3):
	// the heartbeat skips it, and says so again when it is its turn.
	for _, p := range cfg.ControllerEntryProblems() {
		log.Error("[health_manager] controller_ip_port_list: entry unusable, heartbeats skip it", "problem", p)
	}
	cfgStore := config.NewStore(cfg)
	store, err := certs.Open(certs.Options{
		CertPath: cfg.AgentServerCert,
		CAPath:   cfg.AgentServerCA,
		// The amphora id may change with PUT /1.0/config; rotation checks
		// against the running value.
		ServerName: func() string { return cfgStore.Current().AmphoraID },
		Log:        log,
	})
	if err != nil {
		return fmt.Errorf("%w (check [amphora_agent] agent_server_cert and agent_server_ca)", err)
	}
	if err := os.MkdirAll(cfg.BasePath, 0o755); err != nil {
		return fmt.Errorf("[haproxy_amphora] base_path: %w", err)
	}
	removeTemps(cfg, log)
	go followSyslogSettings(ctx, cfgStore, logs)
	units, systemd, err := serviceManager(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer units.Close()
	nw := network(cfgStore, log)
	restoreNetwork(ctx, nw, log)
	netnsUnit := ""
	if systemd {
		netnsUnit = netns.UnitName
		if err := installNetnsUnit(ctx, cfg, units); err != nil {
			return err
		}
	}
	announcer := nw.Announcer(ctx)
	defer announcer.Wait()
	dp := newDataPlane(ctx, cfg, cfgStore, units, netnsUnit, nw, announcer, log)
	var wg sync.WaitGroup
	defer wg.Wait()
	proxy := &proxyService{store: cfgStore, units: units, netnsUnit: netnsUnit, lbs: dp.inv, agentArgv: agentArgv(cfg), log: log}
	proxy.Sync(ctx)
	// Memory start-up and bursts of requests leave behind (internal/memtrim).
	keeper := &memtrim.Keeper{Interval: time.Second, Threshold: 1 << 20, Settle: 5, Log: log}
	hb := heartbeat.New(cfgStore, heartbeat.Sources{LoadBalancers: dp.lbs, LVS: dp.lvs, VRRP: dp.vrrp.Paths()}, log)
	hbCtx, stopHB := context.WithCancel(ctx)
	defer stopHB()
	wg.Go(func() { hb.Run(hbCtx) })
	srv := agent.New(agent.Deps{
		Config: cfgStore,
		Certs:  store,
		Log:    log,
		Host:   hostinfo.New(cfg.HAProxyCmd),
		LBs:    lbsWithProxy{dp.lbs, proxy},
		Net:    nw,
		VRRP:   dp.vrrp,
		LVS:    dp.lvs,
		// The keeper gives back what a burst of requests left once it
		// is over.
		Activity: keeper.Begin,
	})
	ln, err := net.Listen("tcp", cfg.ListenAddr())
	if err != nil {
		return fmt.Errorf("[haproxy_amphora] bind_host/bind_port: %w", err)
	}
	leaf := store.Leaf()
	log.Info("amphora agent listening", "addr", ln.Addr().String(), "version", version,
		"amphora_id", cfg.AmphoraID, "server_cert_cn", leaf.Subject.CommonName, "server_cert_not_after", leaf.NotAfter,
		"config_files", fmt.Sprint(cfg.Files), "service_manager", map[bool]string{true: "systemd", false: "builtin"}[systemd])
	if sent, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("systemd readiness notification failed", "err", err)
	} else if sent {
		log.Debug("systemd notified: ready")
	}
	wg.Go(func() { keeper.Run(hbCtx) })
	err = srv.Serve(ctx, ln)
	log.Info("amphora agent stopped")
	return err
}

// removeTemps removes the temporary files a crash in the middle of a
// write left next to the files serve itself writes: the configuration
// file (PUT /1.0/config), the heartbeat counters, and the spool files
// of uploads (where they cannot be anonymous). The components
// clean their own directories when they start.
func removeTemps(cfg *config.Config, log *slog.Logger) {
	for _, f := range append([]string{filepath.Join(cfg.BasePath, heartbeat.CountersFile)}, cfg.Files...) {
		removed, err := fsutil.RemoveTemps(filepath.Dir(f), func(t string) bool { return t == filepath.Base(f) })
		if len(removed) > 0 || err != nil {
			log.Info("temporary files of interrupted writes removed", "files", strings.Join(removed, " "), "err", err)
		}
	}
	if removed, err := spool.RemoveLeftovers(cfg.BasePath); len(removed) > 0 || err != nil {
		log.Info("upload spool files of interrupted requests removed", "files", strings.Join(removed, " "), "err", err)
	}
}

// restoreNetwork brings the plugged interfaces back after a reboot (the
// NICs reappear in the root namespace) or a crash, before the API
// answers: the same as "amphora-agent interface up all", which
// amphora-netns.service runs at boot. It converges, so running it on
// every start is harmless.
func restoreNetwork(ctx context.Context, nw *netns.Manager, log *slog.Logger) {
	if err := nw.WriteLoopbackFile(); err != nil {
		log.Warn("could not write the loopback interface file", "err", err)
	}
	warnings, err := nw.Up(ctx, "all")
	for _, w := range warnings {
		log.Warn("interface restore", "warning", w)
	}
	if err != nil {
		log.Error("interface restore failed", "err", err)
	}
}

// oneProcessor runs the agent's goroutines on one processor (GOMAXPROCS
// 1) unless the GOMAXPROCS environment variable says otherwise, and
// returns the setting in force.
//
// Nothing the agent does needs parallelism: a heartbeat is a few
// milliseconds of work a second, requests come one at a time from the
// controller, and the CPUs belong to haproxy. With one processor per CPU
// the runtime keeps a cache and a collector worker per processor and
// wakes idle threads to look for work whenever a goroutine becomes
// runnable; measured on 2 CPUs with the 50 x 40 load balancer
// heartbeated every second (make bench): PSS 16.0 -> 13.2 MiB, CPU per
// heartbeat unchanged within the run's spread. On a 1-vCPU amphora it
// is the runtime's own choice.
func oneProcessor() int {
	if os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0)
	}
	runtime.GOMAXPROCS(1)
	return 1
}
