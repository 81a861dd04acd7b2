package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/keepalived"
	"github.com/octavia-go/amphora-agent/netns"
	"github.com/octavia-go/amphora-agent/service"
)

// dataPlane is what the agent drives in the data-plane namespace: the
// haproxy load balancers, the UDP/SCTP listeners (keepalived LVS) and the
// VRRP keepalived.
type dataPlane struct {
	inv  *haproxy.Inventory // the read side of lbs
	lbs  *haproxy.Manager
	lvs  *keepalived.LVSManager
	vrrp *keepalived.Manager
}

// newDataPlane builds the data plane in the order its parts depend on
// each other, and reconciles it with what is on disk:
//
//   - the haproxy inventory (read side) first: keepalived's VRRP check
//     covers the load balancers it lists;
//   - the VRRP keepalived, which the LVS listeners and the load balancers
//     refresh when the set of services that should run changes;
//   - the LVS listeners and the load balancers last.
//
// netns is below all of them: they create the namespace through nw and
// announce their VIPs through announcer.
func newDataPlane(ctx context.Context, cfg *config.Config, store *config.Store, units service.Manager, netnsUnit string,
	nw *netns.Manager, announcer *netns.Announcer, log *slog.Logger) *dataPlane {
	topology := func() string { return store.Current().LoadBalancerTopology }
	inventory := haproxy.NewInventory(cfg.BasePath, units, log)
	ka := keepalivedOptions(cfg, log)
	ka.Units, ka.NetnsUnit, ka.Netns = units, netnsUnit, nw
	vrrp := keepalived.NewManager(keepalived.Options{Common: ka, LoadBalancers: inventory})
	lvs := keepalived.NewLVSManager(keepalived.LVSOptions{Common: ka, Topology: topology, VRRP: vrrp, Advertiser: announcer})
	lbs := haproxy.NewManager(haproxy.Options{
		BasePath:        cfg.BasePath,
		CertDir:         cfg.BaseCertDir,
		Cmd:             cfg.HAProxyCmd,
		UserGroupConfig: cfg.UserGroupConfig,
		Namespace:       cfg.Namespace,
		NetnsUnit:       netnsUnit,
		AmphoraID:       cfg.AmphoraID,
		Topology:        topology,
		Units:           units,
		Inventory:       inventory,
		Netns:           nw,
		Advertiser:      announcer,
		VRRP:            vrrp,
		Log:             log,
	})
	lbs.Reconcile(ctx)
	lvs.Reconcile(ctx)
	vrrp.Reconcile(ctx)
	return &dataPlane{inv: inventory, lbs: lbs, lvs: lvs, vrrp: vrrp}
}

// keepalivedOptions are the options of every keepalived, as the
// configuration gives them; without a service manager an LVS manager
// only reads (listing, heartbeat statistics) for the operator
// subcommands.
func keepalivedOptions(cfg *config.Config, log *slog.Logger) keepalived.Common {
	return keepalived.Common{
		BasePath:    cfg.BasePath,
		Namespace:   cfg.Namespace,
		LogFacility: cfg.AdministrativeLogFacility,
		Agent:       agentBinary(cfg),
		Log:         log,
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
		self = "/usr/bin/amphora-agent" // where the package installs it
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

// agentBinary is the agent's own binary, which the check scripts run.
// An upgrade replaces the file under a running agent: /proc then says
// "(deleted)", and the scripts must name the new one.
func agentBinary(cfg *config.Config) string {
	return strings.TrimSuffix(agentArgv(cfg)[0], " (deleted)")
}
