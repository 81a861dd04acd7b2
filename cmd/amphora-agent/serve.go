package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/octavia-go/amphora-agent/agent"
	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/agent/heartbeat"
	"github.com/octavia-go/amphora-agent/certs"
	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/keepalived"
	"github.com/octavia-go/amphora-agent/netns"
	"github.com/octavia-go/amphora-agent/service"
)

func runServe(ctx context.Context, g *globals, args []string) error {
	if _, err := subFlags(g, "serve", args, nil); err != nil {
		return err
	}
	cfg, log, err := loadConfig(g)
	if err != nil {
		return err
	}
	store, err := certs.Open(cfg.AgentServerCert, cfg.AgentServerCA, log)
	if err != nil {
		return fmt.Errorf("%w (check [amphora_agent] agent_server_cert and agent_server_ca)", err)
	}
	if err := os.MkdirAll(cfg.BasePath, 0o755); err != nil {
		return fmt.Errorf("[haproxy_amphora] base_path: %w", err)
	}
	cfgStore := config.NewStore(cfg)
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
	var wg sync.WaitGroup
	defer wg.Wait()
	var vrrp *keepalived.Manager // built after lbs: each one calls the other
	advertise := func(_ context.Context, addrs []string) {
		// GARP/NA repeats take a moment; the API answers without waiting.
		wg.Go(func() {
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := nw.AdvertiseAll(actx, addrs); err != nil {
				log.Debug("VIP advertisement not sent", "addrs", fmt.Sprint(addrs), "err", err)
			}
		})
	}
	lbs := haproxy.NewManager(haproxy.Options{
		Config:    cfgStore,
		Units:     units,
		NetnsUnit: netnsUnit,
		Log:       log,
		Hooks: haproxy.Hooks{
			EnsureNamespace: func(context.Context) error { return nw.EnsureNamespace() },
			Advertise:       advertise,
			VRRPCheckUpdate: func(ctx context.Context) { refreshVRRPCheck(ctx, vrrp, log) },
		},
	})
	lbs.Reconcile(ctx)
	lvs := keepalived.NewLVSManager(keepalived.LVSOptions{
		Config:    cfgStore,
		Units:     units,
		NetnsUnit: netnsUnit,
		Agent:     strings.TrimSuffix(agentArgv(cfg)[0], " (deleted)"),
		Log:       log,
		Hooks: keepalived.LVSHooks{
			EnsureNamespace: func(context.Context) error { return nw.EnsureNamespace() },
			Advertise:       advertise,
			VRRPCheckUpdate: func(ctx context.Context) { refreshVRRPCheck(ctx, vrrp, log) },
		},
	})
	lvs.Reconcile(ctx)
	vrrp = newVRRP(cfgStore, units, netnsUnit, nw, lbs, agentArgv(cfg), log)
	vrrp.SetLVS(lvs)
	vrrp.Reconcile(ctx)
	hb := heartbeat.New(cfgStore, heartbeatSource{cfg: cfgStore, lbs: lbs, lvs: lvs}, log)
	hbCtx, stopHB := context.WithCancel(ctx)
	defer stopHB()
	wg.Go(func() { hb.Run(hbCtx) })
	info := agent.NewInfo(cfgStore)
	info.Inventory = lbs
	info.LVS = lvs
	srv := agent.New(agent.Deps{
		Config:  cfgStore,
		Certs:   store,
		Log:     log,
		Info:    info,
		LBs:     lbs,
		Net:     nw,
		VRRP:    vrrp,
		LVS:     lvs,
		Version: version,
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
	err = srv.Serve(ctx, ln)
	log.Info("amphora agent stopped")
	return err
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

// installNetnsUnit writes amphora-netns.service, which the haproxy and
// keepalived units require, once at start-up: its content depends only
// on options that cannot change while the agent runs. The service
// manager keeps a unit the image (or an operator) provides.
func installNetnsUnit(ctx context.Context, cfg *config.Config, units service.Manager) error {
	text, err := netns.Unit(cfg.Namespace, agentArgv(cfg))
	if err == nil {
		_, err = units.Install(ctx, service.Service{Name: netns.UnitName, Unit: text})
	}
	if err != nil {
		return fmt.Errorf("%s.service: %w", netns.UnitName, err)
	}
	return nil
}

// serviceManager picks how haproxy and keepalived are run: systemd units
// when systemd is the system manager (or when configured), else the
// agent's own supervisor.
func serviceManager(ctx context.Context, cfg *config.Config, log *slog.Logger) (service.Manager, bool, error) {
	useSystemd := cfg.ServiceManager == config.ServiceManagerSystemd ||
		cfg.ServiceManager == config.ServiceManagerAuto && service.Booted()
	if useSystemd {
		m, err := service.NewSystemd(ctx, service.SystemdOptions{UnitDir: cfg.SystemdUnitDir, Logger: log})
		if err != nil {
			return nil, false, fmt.Errorf("[amphora_agent] service_manager=%s: %w", cfg.ServiceManager, err)
		}
		return m, true, nil
	}
	m, err := service.NewSupervisor(service.SupervisorOptions{StateDir: filepath.Join(cfg.BasePath, "supervisor"), Logger: log})
	if err != nil {
		return nil, false, err
	}
	return m, false, nil
}

// agentArgv is how units run this agent again (amphora-netns.service):
// the same binary with the same configuration files.
func agentArgv(cfg *config.Config) []string {
	self, err := os.Executable()
	if err != nil {
		self = "/usr/local/bin/amphora-agent"
	}
	argv := []string{self}
	for _, f := range cfg.Files {
		if abs, err := filepath.Abs(f); err == nil {
			f = abs
		}
		argv = append(argv, "--config-file", f)
	}
	return argv
}
