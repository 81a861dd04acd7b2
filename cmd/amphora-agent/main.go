// Command amphora-agent is the Octavia amphora agent: the REST API the
// controller drives, the health heartbeat, and the helpers the amphora's
// units and keepalived call.
//
//	amphora-agent --config-file /etc/octavia/amphora-agent.conf   run the agent
//	amphora-agent version                                          print the version
//
// See "amphora-agent help" for the other subcommands. Invoked as
// amphora-health-checker, haproxy-vrrp-check or amphora-interface (a link
// of that name; the image installs hard links) it runs health-check,
// vrrp-check or interface, the reference's helpers of those names.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/octavia-go/amphora-agent/agent/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// command is one subcommand. A usage text that starts with the
// command's arguments separates them from the description with ": "
// (see commandHelp): it becomes the manual page's entry too.
type command struct {
	name, usage string
	run         func(ctx context.Context, g *globals, args []string) error
}

func commands() []command {
	return []command{
		{"serve", "run the agent (the default when no subcommand is given)", runServe},
		{"version", "print the agent version", runVersion},
		{"heartbeat", "--print: show the heartbeat message the agent would send now", runHeartbeat},
		{"status", "show what the agent sees: configuration, load balancers, VRRP, interfaces, heartbeat", runStatus},
		{"interface", "up|down <name|all>: apply the plugged interfaces (boot-time restore)", runInterface},
		{"vrrp-check", "<stats socket>...: keepalived's haproxy check (exit 0 when every haproxy answers)", runVRRPCheck},
		{"health-check", "<sctp|udp> [-t seconds] <address> <port>: keepalived's member check of the LVS listeners", runHealthCheck},
		{"lvs-check", "<pid file>...: keepalived's LVS check (exit 0 when every LVS keepalived runs)", runLVSCheck},
		{"prometheus-proxy", "[--listen 127.0.0.1:9102]: serve Octavia's metrics behind PROMETHEUS listeners (inside the data-plane namespace)", runPrometheusProxy},
	}
}

// globals are the options every subcommand accepts, oslo style.
type globals struct {
	configFiles []string
	debug       bool
	stdout      io.Writer
	stderr      io.Writer
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func (g *globals) register(fs *flag.FlagSet) {
	fs.Var((*multiFlag)(&g.configFiles), "config-file", "configuration file (repeatable; later files override earlier ones)")
	fs.BoolVar(&g.debug, "debug", g.debug, "log at debug level")
	fs.BoolVar(&g.debug, "d", g.debug, "shorthand for --debug")
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, aliasArgs(os.Args[0], os.Args[1:]), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses the command line and runs the subcommand; it returns the
// process exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("amphora-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	g.register(fs)
	fs.Usage = func() { usage(stderr) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	rest := fs.Args()
	name := "serve"
	if len(rest) > 0 {
		name, rest = rest[0], rest[1:]
	}
	if name == "help" {
		usage(stdout)
		return 0
	}
	for _, c := range append(commands(), hiddenCommands()...) {
		if c.name != name {
			continue
		}
		err := c.run(ctx, g, rest)
		var ee exitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &ee):
			if ee.msg != "" {
				fmt.Fprintln(stderr, ee.msg)
			}
			return ee.code
		default:
			fmt.Fprintf(stderr, "amphora-agent %s: %v\n", name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "amphora-agent: unknown command %q\n", name)
	usage(stderr)
	return 2
}

// exitError carries a specific exit status (and message) to main.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// subFlags parses a subcommand's arguments, accepting the global options
// there too (amphora-agent interface --config-file X up all).
func subFlags(g *globals, name string, args []string, define func(*flag.FlagSet)) ([]string, error) {
	fs := flag.NewFlagSet("amphora-agent "+name, flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	g.register(fs)
	if define != nil {
		define(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, exitError{code: 2}
	}
	return fs.Args(), nil
}

// loadConfig reads the configuration files given on the command line
// (none: the defaults) and returns it with a logger at the configured
// level; unknown options are logged at debug level.
func loadConfig(g *globals) (*config.Config, *slog.Logger, error) {
	cfg, unknown, err := config.Load(g.configFiles...)
	if err != nil {
		return nil, nil, err
	}
	if g.debug {
		cfg.Debug = true
	}
	log := newLogger(g.stderr, cfg.Debug)
	for _, u := range unknown {
		log.Debug("unknown configuration option ignored", "file", u.File, "section", u.Section, "option", u.Option)
	}
	return cfg, log, nil
}

// newLogger writes structured text records to stderr, which journald
// collects when the agent runs as a unit.
func newLogger(w io.Writer, debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

func runVersion(_ context.Context, g *globals, args []string) error {
	if _, err := subFlags(g, "version", args, nil); err != nil {
		return err
	}
	fmt.Fprintln(g.stdout, version)
	return nil
}
