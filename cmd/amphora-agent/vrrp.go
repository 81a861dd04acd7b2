package main

import (
	"context"
	"flag"
	"time"

	"github.com/octavia-go/amphora-agent/haproxy"
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
	if err := haproxy.CheckAnswering(ctx, sockets); err != nil {
		return exitError{code: 1, msg: "vrrp-check: " + err.Error()}
	}
	return nil
}
