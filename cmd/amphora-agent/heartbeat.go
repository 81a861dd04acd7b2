package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"

	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/agent/heartbeat"
	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/keepalived"
)

// heartbeatSource feeds the heartbeat sender: the load balancers whose
// haproxy runs (as the service manager sees it) and the keepalived gate.
type heartbeatSource struct {
	cfg *config.Store
	lbs *haproxy.Inventory
	lvs *keepalived.LVSManager // UDP/SCTP listeners (ExtraStats); may be nil
}

func (s heartbeatSource) RunningLoadBalancers(ctx context.Context) ([]heartbeat.LB, error) {
	ids := s.lbs.RunningLoadBalancers(ctx)
	out := make([]heartbeat.LB, 0, len(ids))
	for _, id := range ids {
		out = append(out, heartbeat.LB{ID: id, StatsSocket: s.lbs.SocketPath(id)})
	}
	return out, nil
}

func (s heartbeatSource) KeepalivedGate(context.Context) (bool, string) {
	configured, problem := keepalived.VRRPPaths(s.cfg.Current().BasePath).Status()
	return configured && problem != "", problem
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
	src := heartbeatSource{cfg: store, lbs: haproxy.NewInventory(cfg.BasePath, nil, log), lvs: keepalived.NewLVSManager(lvsOptions(cfg, log))}
	if skip, reason := src.KeepalivedGate(ctx); skip {
		fmt.Fprintf(g.stderr, "note: the agent is not sending heartbeats now: %s\n", reason)
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

// ExtraStats adds the UDP/SCTP listeners of keepalived LVS to the
// heartbeat (heartbeat.ExtraSource): absolute IPVS counters mapped onto
// the haproxy names, pools keyed by bare pool id.
func (s heartbeatSource) ExtraStats(ctx context.Context) (*haproxy.StatsReport, error) {
	if s.lvs == nil {
		return nil, nil
	}
	rep, err := s.lvs.Stats(ctx)
	if err != nil {
		return nil, err
	}
	out := &haproxy.StatsReport{
		Listeners: make(map[string]haproxy.ListenerStats, len(rep.Listeners)),
		Pools:     make(map[string]haproxy.PoolStatus, len(rep.Pools)),
	}
	for id, l := range rep.Listeners {
		out.Listeners[id] = haproxy.ListenerStats{
			Status: l.Status, Bin: l.InBytes, Bout: l.OutBytes, Scur: l.ActiveConns, Stot: l.Conns,
		}
	}
	for id, p := range rep.Pools {
		out.Pools[id] = haproxy.PoolStatus{Status: p.Status, Members: p.Members}
	}
	return out, nil
}
