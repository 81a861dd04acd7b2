package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/octavia-go/amphora-agent/keepalived"
	"github.com/octavia-go/amphora-agent/keepalived/healthcheck"
)

// helperAliases are the reference's helper programs this binary answers
// to when it is invoked under that name (argv[0]), so that configurations
// rendered by the controller work unchanged: keepalived's MISC_CHECK runs
// "amphora-health-checker sctp ...". For keepalived the name must be a
// hard link (or a copy): it resolves scripts found by PATH search with
// realpath() and runs the target under the resolved name, so a symlink
// would run as amphora-agent.
var helperAliases = map[string]string{
	"amphora-health-checker": "health-check",
	"haproxy-vrrp-check":     "vrrp-check",
	"amphora-interface":      "interface",
}

// aliasArgs turns the command line of a helper alias into the
// subcommand's: "amphora-health-checker sctp ..." is
// "amphora-agent health-check sctp ...".
func aliasArgs(argv0 string, args []string) []string {
	if sub, ok := helperAliases[filepath.Base(argv0)]; ok {
		return append([]string{sub}, args...)
	}
	return args
}

// runHealthCheck is "amphora-agent health-check <sctp|udp> [-t seconds]
// <address> <port>", the member checks keepalived runs for the LVS
// listeners:
//
//   - sctp: a raw SCTP INIT (random source port and initiate tag, CRC32c)
//     and a wait for the answer; exit 0 on INIT-ACK, 1 on ABORT, 2 on
//     timeout (default 3 s), 3 on any other chunk. After an INIT-ACK (or
//     an unexpected chunk) on a kernel without SCTP it sends the ABORT the
//     kernel would have sent, so the member does not keep a half-open
//     association.
//   - udp: a UDP probe; exit 1 when an ICMP port unreachable comes back
//     within the timeout (default 1 s), else 0 (the reference's
//     "nc -uzv" in udp_check.sh).
func runHealthCheck(ctx context.Context, g *globals, args []string) error {
	var timeout time.Duration
	setTimeout := func(v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > 3600 {
			return fmt.Errorf("invalid timeout %q (seconds)", v)
		}
		timeout = time.Duration(f * float64(time.Second))
		return nil
	}
	defineTimeout := func(fs *flag.FlagSet) { fs.Func("t", "timeout in seconds", setTimeout) }
	usage := exitError{code: 1, msg: "usage: amphora-agent health-check <sctp|udp> [-t seconds] <address> <port>"}
	rest, err := subFlags(g, "health-check", args, defineTimeout)
	if err != nil || len(rest) == 0 {
		return usage
	}
	given := rest[0]
	proto := strings.ToLower(given)
	// the reference's order: protocol, then -t
	fs := flag.NewFlagSet("amphora-agent health-check "+proto, flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	defineTimeout(fs)
	if err := fs.Parse(rest[1:]); err != nil {
		return usage
	}
	rest = fs.Args()
	if proto != "sctp" && proto != "udp" {
		return exitError{code: 1, msg: fmt.Sprintf("Unsupported protocol '%s'", given)}
	}
	if len(rest) != 2 {
		return usage
	}
	addr, err := netip.ParseAddr(rest[0])
	if err != nil {
		return exitError{code: 1, msg: "health-check: invalid address " + strconv.Quote(rest[0])}
	}
	port, err := strconv.ParseUint(rest[1], 10, 16)
	if err != nil || port == 0 {
		return exitError{code: 1, msg: "health-check: invalid port " + strconv.Quote(rest[1])}
	}
	dst := netip.AddrPortFrom(addr.Unmap(), uint16(port))
	var code int
	if proto == "sctp" {
		if timeout == 0 {
			timeout = 3 * time.Second
		}
		code, err = healthcheck.SCTP(ctx, dst, timeout, g.stdout)
	} else {
		if timeout == 0 {
			timeout = time.Second
		}
		code, err = healthcheck.UDP(ctx, dst, timeout, g.stdout)
	}
	if err != nil {
		return exitError{code: 1, msg: "health-check: " + err.Error()}
	}
	if code != 0 {
		return exitError{code: code}
	}
	return nil
}

// runLVSCheck is "amphora-agent lvs-check [--] <pid file>...", the check
// keepalived runs through check_scripts/lvs_udp_check.sh: exit 0 when
// every pid file names a live keepalived (none given: 0, no LVS listener
// has to run), else 1.
func runLVSCheck(_ context.Context, g *globals, args []string) error {
	files, err := subFlags(g, "lvs-check", args, nil)
	if err != nil {
		return err
	}
	if err := keepalived.CheckLVS(files); err != nil {
		return exitError{code: 1, msg: "lvs-check: " + strings.ReplaceAll(err.Error(), "\n", "; ")}
	}
	return nil
}
