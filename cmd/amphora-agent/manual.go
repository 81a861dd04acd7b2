package main

// The help text ("amphora-agent help", --help) and the manual page
// amphora-agent(8) come from the same data: the command table
// (commands()), the global options (globals.register), the helper names
// (helperAliases), and the files, configuration options and exit
// statuses below. The Debian package generates its manual page with the
// hidden command "amphora-agent manual" and its helper links with
// "amphora-agent manual --aliases".

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/keepalived/healthcheck"
)

// synopsis is the command line of every invocation.
const synopsis = "[--config-file FILE]... [--debug] [command] [args]"

// commandHelp splits a command's usage text into its arguments and its
// description: a usage text that starts with the arguments ("-", "<" or
// "[", or a "a|b" choice) separates them from the description with ": ".
func commandHelp(c command) (args, text string) {
	a, t, ok := strings.Cut(c.usage, ": ")
	if ok && (strings.ContainsAny(a[:1], "-<[") || strings.Contains(strings.Fields(a)[0], "|")) {
		return a, t
	}
	return "", c.usage
}

// flagHelp is one global option: its names ("-d, --debug"), argument
// name and description.
type flagHelp struct{ names, arg, text string }

// globalFlags lists the global options, shorthands merged into the
// option they stand for ("shorthand for --x").
func globalFlags() []flagHelp {
	fs := flag.NewFlagSet("amphora-agent", flag.ContinueOnError)
	(&globals{}).register(fs)
	short := map[string]string{} // long name -> shorthand
	fs.VisitAll(func(f *flag.Flag) {
		if long, ok := strings.CutPrefix(f.Usage, "shorthand for --"); ok {
			short[long] = f.Name
		}
	})
	var out []flagHelp
	fs.VisitAll(func(f *flag.Flag) {
		if strings.HasPrefix(f.Usage, "shorthand for --") {
			return
		}
		arg, text := flag.UnquoteUsage(f)
		if arg == "value" {
			arg = strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
			if i := strings.LastIndex(arg, "_"); i >= 0 {
				arg = arg[i+1:]
			}
		}
		names := "--" + f.Name
		if s, ok := short[f.Name]; ok {
			names = "-" + s + ", " + names
		}
		out = append(out, flagHelp{names: names, arg: arg, text: text})
	})
	return out
}

// fileHelp is a file the agent reads or writes.
type fileHelp struct{ path, text string }

func files() []fileHelp {
	d := config.Defaults()
	return []fileHelp{
		{"/etc/octavia/amphora-agent.conf", "the configuration the controller renders (delivered on the config drive); give it with --config-file"},
		{d.AgentServerCert, "the agent's TLS certificate and key, issued for the amphora id ([amphora_agent] agent_server_cert)"},
		{d.AgentServerCA, "the CA of the controller's client certificates ([amphora_agent] agent_server_ca)"},
		{d.AgentServerNetworkDir + "/", "one file per plugged interface ([amphora_agent] agent_server_network_dir)"},
		{d.BasePath + "/", "the load balancers' haproxy and keepalived configurations, certificates and state ([haproxy_amphora] base_path)"},
		{d.SystemdUnitDir + "/", "haproxy-<lb>.service, octavia-keepalived.service, amphora-netns.service: the units the agent writes ([amphora_agent] systemd_unit_dir)"},
		{"/run/rsyslog/octavia/log", "the syslog socket the controller's haproxy configurations log to, created by rsyslog"},
	}
}

// ourOptions are the configuration options of this implementation, all in
// [amphora_agent] and all optional; the defaults are the agent's own.
func ourOptions() []fileHelp {
	d := config.Defaults()
	return []fileHelp{
		{"service_manager = " + d.ServiceManager, "systemd (unit files driven over D-Bus), builtin (the agent supervises haproxy and keepalived itself) or auto (systemd when it is the running system manager)"},
		{"max_request_body_size = " + strconv.FormatInt(d.MaxBodySize, 10), "the largest configuration or certificate upload, in bytes"},
		{"network_namespace = " + d.Namespace, "the data-plane network namespace"},
		{"systemd_unit_dir = " + d.SystemdUnitDir, "where the agent writes its units"},
		{"haproxy_user_group_config = " + d.UserGroupConfig, "haproxy's user and group snippet, written when missing"},
		{"pci_rescan_path = " + d.PCIRescanPath, "written (at most every 10 s) when a plugged port's MAC is not visible yet; empty disables"},
	}
}

// exitHelp is an exit status.
type exitHelp struct{ code, text string }

func exitStatuses() []exitHelp {
	return []exitHelp{
		{"0", "success; for vrrp-check and lvs-check: every checked service answers; for health-check: the member is up"},
		{"1", "failure, with the cause on standard error; for the checks: a service or member is down"},
		{"2", "bad command line (unknown command or option, missing arguments); health-check sctp: no answer within the timeout"},
		{strconv.Itoa(healthcheck.SCTPOther), "health-check sctp: the member answered with neither INIT-ACK nor ABORT"},
	}
}

// aliases returns the helper names, sorted.
func aliases() []string {
	return slices.Sorted(maps.Keys(helperAliases))
}

// usage writes the help text.
func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: amphora-agent "+synopsis)
	fmt.Fprintln(w, "\ncommands:")
	width := 0
	for _, c := range commands() {
		width = max(width, len(c.name))
	}
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-*s %s\n", width, c.name, c.usage)
	}
	fmt.Fprintln(w, "\noptions:")
	for _, f := range globalFlags() {
		fmt.Fprintf(w, "  %-24s %s\n", strings.TrimSpace(f.names+" "+f.arg), f.text)
	}
	var as []string
	for _, a := range aliases() {
		as = append(as, a+" = "+helperAliases[a])
	}
	fmt.Fprintf(w, "\nhelper names (links to this program): %s\n", strings.Join(as, ", "))
	fmt.Fprintln(w, "\nfiles:")
	for _, f := range files() {
		fmt.Fprintf(w, "  %s\n      %s\n", f.path, f.text)
	}
	fmt.Fprintln(w, "\nexit status:")
	for _, e := range exitStatuses() {
		fmt.Fprintf(w, "  %s  %s\n", e.code, e.text)
	}
	fmt.Fprintln(w, "\nSee amphora-agent(8) for the configuration options of this implementation.")
}

// roff escapes text for the body of a manual page.
func roff(s string) string {
	s = strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// writeManual writes amphora-agent(8) in roff.
func writeManual(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p(`.TH AMPHORA\-AGENT 8 "" "amphora-agent %s" "System Administration"`, roff(version))
	p(".ad l")
	p(".nh")
	p(".SH NAME")
	p(`amphora\-agent \- OpenStack Octavia amphora agent`)
	p(".SH SYNOPSIS")
	p(`.B amphora\-agent`)
	p("%s", roff(synopsis))
	p(".SH DESCRIPTION")
	p(`.B amphora\-agent`)
	p("runs inside every Octavia load balancer VM (amphora). The Octavia controller drives it over mutual TLS (REST API 1.0, port 9443):")
	p("it stores the HAProxy and keepalived configurations and certificates the controller renders, plugs the VIP and member ports")
	p(`into the data\-plane network namespace and starts, reloads and stops the services. It sends a signed UDP heartbeat with`)
	p("listener and member statistics to the health managers. It is a drop\\-in replacement of the reference agent: same API, same")
	p("configuration file, same files on disk.")
	p(".PP")
	p("Without a command it serves. The other commands inspect a running amphora or are the helpers keepalived and the units call.")
	p(".SH COMMANDS")
	for _, c := range commands() {
		args, text := commandHelp(c)
		p(".TP")
		if args != "" {
			p(`\fB%s\fR %s`, roff(c.name), roff(args))
		} else {
			p(`.B %s`, roff(c.name))
		}
		p("%s", roff(text))
	}
	p(".SH OPTIONS")
	p("Every command accepts these options, before or after the command name.")
	for _, f := range globalFlags() {
		p(".TP")
		names := strings.Split(f.names, ", ")
		for i, n := range names {
			names[i] = `\fB` + roff(n) + `\fR`
		}
		line := strings.Join(names, ", ")
		if f.arg != "" {
			line += ` \fI` + roff(f.arg) + `\fR`
		}
		p("%s", line)
		p("%s", roff(f.text))
	}
	p(".SH HELPER NAMES")
	p("Invoked under one of these names (a hard link to the program), it runs the command given, with the same arguments:")
	p("the names the reference agent's helpers have, which configurations rendered by the controller call.")
	for _, a := range aliases() {
		p(".TP")
		p(`.B %s`, roff(a))
		p(`\fBamphora\-agent %s\fR`, roff(helperAliases[a]))
	}
	p(".SH CONFIGURATION")
	p("The configuration file is the one the controller renders for the reference agent; unknown options are ignored.")
	p("Options of this implementation, all in the")
	p(`.B [amphora_agent]`)
	p("section, all optional (shown with their defaults):")
	for _, o := range ourOptions() {
		p(".TP")
		p(`.B %s`, roff(o.path))
		p("%s", roff(o.text))
	}
	p(".SH FILES")
	for _, f := range files() {
		p(".TP")
		p(`.I %s`, roff(f.path))
		p("%s", roff(f.text))
	}
	p(".SH EXIT STATUS")
	for _, e := range exitStatuses() {
		p(".TP")
		p(`.B %s`, e.code)
		p("%s", roff(e.text))
	}
	p(".SH SEE ALSO")
	p(`.BR haproxy (1),`)
	p(`.BR keepalived (8),`)
	p(`.BR ipvsadm (8),`)
	p(`.BR systemd.service (5)`)
}

// hiddenCommands are commands the help text does not list.
func hiddenCommands() []command {
	return []command{{"manual", "[--aliases]: the manual page in roff (the helper names)", runManual}}
}

// runManual is the hidden command "amphora-agent manual [--aliases]":
// the manual page in roff, or the helper names one per line.
func runManual(_ context.Context, g *globals, args []string) error {
	var names bool
	if _, err := subFlags(g, "manual", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&names, "aliases", false, "print the helper names, one per line")
	}); err != nil {
		return err
	}
	if names {
		for _, a := range aliases() {
			fmt.Fprintln(g.stdout, a)
		}
		return nil
	}
	writeManual(g.stdout)
	return nil
}
