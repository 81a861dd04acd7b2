package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"

	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/agent/heartbeat"
	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/keepalived"
)

// heartbeatSources is what the operator subcommands report on: the data
// plane as it is on disk and in the kernel, read without a service
// manager.
func heartbeatSources(cfg *config.Config, log *slog.Logger) heartbeat.Sources {
	return heartbeat.Sources{
		LoadBalancers: haproxy.NewInventory(cfg.BasePath, nil, log),
		LVS:           keepalived.NewLVSManager(keepalived.LVSOptions{Common: keepalivedOptions(cfg, log)}),
		VRRP:          keepalived.VRRPPaths(cfg.BasePath),
	}
}

// runHeartbeat is the operator's view of the heartbeat:
// "amphora-agent heartbeat --print" shows the message the agent would
// send now, decoded, without sending it or touching the counters.
func runHeartbeat(ctx context.Context, g *globals, args []string) error {
	var print bool
	if _, err := subFlags(g, "heartbeat", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&print, "print", false, "print the heartbeat message the agent would send now, as indented JSON")
	}); err != nil {
		return err
	}
	if !print {
		return exitError{code: 2, msg: "usage: amphora-agent [--config-file FILE] heartbeat --print"}
	}
	cfg, log, err := loadConfig(g)
	if err != nil {
		return err
	}
	store := config.NewStore(cfg)
	src := heartbeatSources(cfg, log)
	if configured, problem := src.VRRP.Status(); configured && problem != "" {
		fmt.Fprintf(g.stderr, "note: the agent is not sending heartbeats now: %s\n", problem)
	}
	if len(cfg.ControllerIPPortList) == 0 {
		fmt.Fprintln(g.stderr, "note: [health_manager] controller_ip_port_list is empty: nothing is sent")
	}
	msg, err := heartbeat.New(store, src, log).Build(ctx)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return err
		}
		return fmt.Errorf("build heartbeat: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, msg, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err = g.stdout.Write(out.Bytes())
	return err
}
