package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/netns"
)

// network builds the data-plane plumbing from the configuration; the
// files it keeps next to the load balancers (plugged NICs, nftables
// rules) live under base_path, /var/lib/octavia by default, as in the
// reference.
func network(store *config.Store, log *slog.Logger) *netns.Manager {
	cfg := store.Current()
	return netns.New(netns.Config{
		Namespace:             cfg.Namespace,
		NetworkDir:            cfg.AgentServerNetworkDir,
		PluggedInterfacesFile: filepath.Join(cfg.BasePath, "plugged_interfaces"),
		RulesFile:             filepath.Join(cfg.BasePath, "nftables-vip.rules"),
		Topology:              func() string { return store.Current().LoadBalancerTopology },
		PCIRescanPath:         cfg.PCIRescanPath,
		Logger:                log,
	})
}

// runInterface is "amphora-agent interface up|down <name|all>": apply
// (or remove) the interface files, moving plugged NICs that came back to
// the root namespace after a reboot into the data-plane namespace first.
// amphora-netns.service runs it at boot; operators can run it by hand.
func runInterface(ctx context.Context, g *globals, args []string) error {
	rest, err := subFlags(g, "interface", args, nil)
	if err != nil {
		return err
	}
	if len(rest) != 2 || rest[0] != "up" && rest[0] != "down" {
		return exitError{code: 2, msg: "usage: amphora-agent [--config-file FILE] interface up|down <interface|all>"}
	}
	cfg, log, err := loadConfig(g)
	if err != nil {
		return err
	}
	m := network(config.NewStore(cfg), log)
	action := m.Up
	if rest[0] == "down" {
		action = m.Down
	}
	warnings, err := action(ctx, rest[1])
	for _, w := range warnings {
		fmt.Fprintln(g.stderr, "Warning:", w)
	}
	if err != nil {
		return exitError{code: 2, msg: "Error: " + err.Error()}
	}
	return nil
}
