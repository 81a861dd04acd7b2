package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/keepalived"
	"github.com/octavia-go/amphora-agent/netns"
	"github.com/octavia-go/amphora-agent/service"
)

// vrrpCheckTimeout bounds one vrrp-check run. keepalived kills a check
// script that outlives the vrrp_script interval (Octavia renders 5 s) and
// counts it as failed; answering earlier keeps the verdict ours.
const vrrpCheckTimeout = 4 * time.Second

// runVRRPCheck is "amphora-agent vrrp-check <stats socket>...", the check
// keepalived runs through check_scripts/haproxy_check_script.sh (the
// reference's haproxy-vrrp-check): exit 0 only when every haproxy answers
// "show info" on its stats socket within the timeout; exit 1 otherwise,
// and also when no socket is given (GAPS C4: an amphora without a running
// load balancer must not become MASTER). It reads no configuration file.
func runVRRPCheck(ctx context.Context, g *globals, args []string) error {
	timeout := vrrpCheckTimeout
	sockets, err := subFlags(g, "vrrp-check", args, func(fs *flag.FlagSet) {
		fs.DurationVar(&timeout, "timeout", timeout, "overall time limit of the check")
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := checkHAProxies(ctx, sockets); err != nil {
		return exitError{code: 1, msg: "vrrp-check: " + err.Error()}
	}
	return nil
}

// errNoSockets: nothing to check means unhealthy.
var errNoSockets = errors.New("no haproxy stats socket to check: no load balancer is running here")

// checkHAProxies asks every stats socket for "show info", concurrently,
// and returns the failures joined (nil when all answered).
func checkHAProxies(ctx context.Context, sockets []string) error {
	if len(sockets) == 0 {
		return errNoSockets
	}
	errs := make([]error, len(sockets))
	var wg sync.WaitGroup
	for i, s := range sockets {
		wg.Go(func() {
			info, err := haproxy.NewStatsClient(s).ShowInfo(ctx)
			if err == nil && info["Pid"] == "" {
				err = fmt.Errorf("haproxy %s: show info without a Pid field", s)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// vrrpSockets returns the stats sockets keepalived's haproxy check
// covers: every configured load balancer except the ones whose service is
// inactive, i.e. stopped through the API or never started. A load
// balancer whose haproxy died (failed, or being restarted) stays in the
// list, so the check fails and the peer takes the VIP. This replaces the
// reference's "all load balancers minus the one being stopped", which
// puts a stopped load balancer back at the next refresh and then fails
// the check of an amphora that is fine.
func vrrpSockets(lbs *haproxy.Manager, units service.Manager) func(ctx context.Context) []string {
	return func(ctx context.Context) []string {
		var out []string
		for _, id := range lbs.List() {
			st, err := units.State(ctx, haproxy.UnitName(id))
			if err == nil && st.ActiveState == "inactive" {
				continue
			}
			out = append(out, lbs.SocketPath(id))
		}
		return out
	}
}

// newVRRP builds the keepalived manager of the amphora.
func newVRRP(store *config.Store, units service.Manager, netnsUnit string, nw *netns.Manager,
	lbs *haproxy.Manager, agentArgv []string, log *slog.Logger) *keepalived.Manager {
	return keepalived.NewManager(keepalived.Options{
		Config:          store,
		Units:           units,
		NetnsUnit:       netnsUnit,
		Agent:           strings.TrimSuffix(agentArgv[0], " (deleted)"), // replaced by an upgrade
		Sockets:         vrrpSockets(lbs, units),
		EnsureNamespace: func(context.Context) error { return nw.EnsureNamespace() },
		Log:             log,
	})
}

// refreshVRRPCheck is the haproxy manager's VRRPCheckUpdate hook.
func refreshVRRPCheck(ctx context.Context, vrrp *keepalived.Manager, log *slog.Logger) {
	if vrrp == nil {
		return
	}
	if err := vrrp.RefreshCheck(ctx); err != nil {
		log.Error("keepalived haproxy check not updated", "err", err)
	}
}
