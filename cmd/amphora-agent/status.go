package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/agent/heartbeat"
	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/keepalived"
	"github.com/octavia-go/amphora-agent/netns"
)

// runStatus is "amphora-agent status": what the agent sees, for an
// operator logged into the amphora. It reads the configuration, the
// files under base_path, the data-plane namespace, the haproxy stats
// sockets and the IPVS tables; it changes nothing and needs no running
// agent.
func runStatus(ctx context.Context, g *globals, args []string) error {
	if _, err := subFlags(g, "status", args, nil); err != nil {
		return err
	}
	cfg, log, err := loadConfig(g)
	if err != nil {
		return err
	}
	store := config.NewStore(cfg)
	w := g.stdout
	section := func(title string) { fmt.Fprintf(w, "\n%s\n%s\n", title, strings.Repeat("-", len(title))) }

	fmt.Fprintf(w, "amphora-agent %s\n", version)
	section("Configuration")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "config files\t%s\n", strings.Join(cfg.Files, ", "))
	fmt.Fprintf(tw, "amphora id\t%s\n", orNone(cfg.AmphoraID))
	fmt.Fprintf(tw, "topology\t%s\n", cfg.LoadBalancerTopology)
	fmt.Fprintf(tw, "REST API\thttps://%s\n", cfg.ListenAddr())
	fmt.Fprintf(tw, "base path\t%s\n", cfg.BasePath)
	fmt.Fprintf(tw, "namespace\t%s\n", cfg.Namespace)
	fmt.Fprintf(tw, "service manager\t%s\n", cfg.ServiceManager)
	fmt.Fprintf(tw, "server certificate\t%s\n", certSummary(cfg.AgentServerCert))
	fmt.Fprintf(tw, "heartbeat\tevery %s to %s, key %s\n", cfg.HeartbeatInterval,
		orNone(strings.Join(cfg.ControllerIPPortList, ", ")), map[bool]string{true: "set", false: "NOT SET (no heartbeats)"}[cfg.HeartbeatKey != ""])
	tw.Flush()

	section("Load balancers")
	lbs := haproxy.NewInventory(cfg.BasePath, nil, log)
	ids := lbs.List()
	if len(ids) == 0 {
		fmt.Fprintln(w, "none configured")
	}
	for _, id := range ids {
		printLB(ctx, w, lbs, id)
	}

	section("Prometheus proxy (PROMETHEUS listeners)")
	printPrometheusProxy(ctx, w, cfg, lbs)

	section("Log offloading (syslog)")
	printSyslog(w, cfg)

	section("UDP/SCTP listeners (keepalived LVS)")
	lvs := keepalived.NewLVSManager(keepalived.LVSOptions{Common: keepalivedOptions(cfg, log)})
	lvsList := lvs.Listeners(ctx)
	if len(lvsList) == 0 {
		fmt.Fprintln(w, "none configured")
	}
	for _, l := range lvsList {
		fmt.Fprintf(w, "%s  %s %s\n", l.UUID, l.Type, l.Status)
	}

	section("VRRP")
	src := heartbeat.Sources{LoadBalancers: lbs, LVS: lvs, VRRP: keepalived.VRRPPaths(cfg.BasePath)}
	configured, problem := src.VRRP.Status()
	switch {
	case !configured:
		fmt.Fprintln(w, "not configured")
	case problem != "":
		fmt.Fprintf(w, "keepalived NOT running: %s (heartbeats are suppressed)\n", problem)
	default:
		fmt.Fprintln(w, "keepalived running")
	}

	section("Network namespace " + cfg.Namespace)
	printNamespace(w, cfg.Namespace)

	section("Heartbeat (what would be sent now)")
	if configured && problem != "" {
		fmt.Fprintf(w, "suppressed: %s\n", problem)
	}
	msg, err := heartbeat.New(store, src, log).Build(ctx)
	if err != nil {
		fmt.Fprintf(w, "cannot build: %v\n", err)
	} else {
		fmt.Fprintf(w, "%s\n", msg)
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func certSummary(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("%s: %v", path, err)
	}
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return path + ": no certificate"
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return fmt.Sprintf("%s: %v", path, err)
		}
		left := "EXPIRED"
		if d := time.Until(c.NotAfter); d > 0 {
			left = fmt.Sprintf("in %d days", int(d.Hours()/24))
		}
		return fmt.Sprintf("%s (CN %s, expires %s, %s)", path, c.Subject.CommonName, c.NotAfter.Format(time.RFC3339), left)
	}
}

func printLB(ctx context.Context, w io.Writer, lbs *haproxy.Inventory, id string) {
	state := "stopped"
	if lbs.Running(ctx, id) {
		state = "running"
	}
	fmt.Fprintf(w, "%s  haproxy %s\n", id, state)
	data, err := lbs.Config(id)
	if err != nil {
		fmt.Fprintf(w, "  config: %v\n", err)
		return
	}
	parsed := haproxy.Parse(data)
	fmt.Fprintf(w, "  config %s (md5 %s), stats socket %s\n", lbs.ConfigPath(id), fsutil.MD5Hex(data), lbs.SocketPath(id))
	for _, f := range parsed.Frontends {
		fmt.Fprintf(w, "  listener %s %s\n", f.Name, f.Mode)
	}
	if state != "running" {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	rep, err := haproxy.NewStatsClient(lbs.SocketPath(id)).Report(qctx)
	if err != nil {
		fmt.Fprintf(w, "  stats socket: %v\n", err)
		return
	}
	for _, name := range slices.Sorted(maps.Keys(rep.Listeners)) {
		l := rep.Listeners[name]
		fmt.Fprintf(w, "  frontend %s %s, %d current / %d total sessions\n", name, l.Status, l.Scur, l.Stot)
	}
	for _, name := range slices.Sorted(maps.Keys(rep.Pools)) {
		p := rep.Pools[name]
		fmt.Fprintf(w, "  pool %s %s\n", name, p.Status)
		for _, m := range slices.Sorted(maps.Keys(p.Members)) {
			fmt.Fprintf(w, "    member %s %s\n", m, p.Members[m])
		}
	}
}

func printNamespace(w io.Writer, name string) {
	ns, err := netns.OpenNamespace(name)
	if err != nil {
		fmt.Fprintf(w, "absent (%v)\n", err)
		return
	}
	defer ns.Close()
	links, err := ns.Handle().LinkList()
	if err != nil {
		fmt.Fprintf(w, "cannot list links: %v\n", err)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, l := range links {
		a := l.Attrs()
		addrs, _ := ns.Handle().AddrList(l, netlink.FAMILY_ALL)
		var list []string
		for _, ad := range addrs {
			list = append(list, ad.IPNet.String())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\tmtu %d\t%s\n", a.Name, a.OperState, a.HardwareAddr, a.MTU, strings.Join(list, " "))
	}
	tw.Flush()
}
