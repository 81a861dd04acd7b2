package haproxy

import (
	"bytes"
	"fmt"
	"strings"
	"syscall"
	"text/template"

	"github.com/octavia-go/amphora-agent/service"
)

// UnitName is the service name of a load balancer's haproxy.
func UnitName(lbID string) string { return "haproxy-" + lbID }

// NetnsUnitName is the service that creates the data-plane namespace and
// restores the plugged NICs at boot.
const NetnsUnitName = "amphora-netns"

// GeneratedMarker starts every unit file the agent writes.
//
// Deprecated: it is service.GeneratedMarker; kept while the image tests
// refer to it here.
const GeneratedMarker = service.GeneratedMarker

var haproxyUnit = template.Must(template.New("haproxy").Parse(`[Unit]
Description=HAProxy Load Balancer
After=network.target syslog.service {{.Netns}}.service
Before=octavia-keepalived.service
Wants=syslog.service
Requires={{.Netns}}.service
# Restart=always must never give up on a crashing haproxy
StartLimitIntervalSec=0

[Service]
# Force context as we start haproxy under "ip netns exec"
SELinuxContext=system_u:system_r:haproxy_t:s0

Environment="CONFIG={{.Config}}" "USERCONFIG={{.UserGroup}}" "PIDFILE={{.PIDFile}}"

ExecStartPre={{.Cmd}} -f $CONFIG -f $USERCONFIG -c -q -L {{.Peer}}

ExecReload={{.Cmd}} -c -f $CONFIG -f $USERCONFIG -L {{.Peer}}
ExecReload=/bin/kill -USR2 $MAINPID
{{if .Wrapper}}
ExecStart=/sbin/ip netns exec {{.Namespace}} {{.Cmd}}-systemd-wrapper -f $CONFIG -f $USERCONFIG -p $PIDFILE -L {{.Peer}}
{{else}}
ExecStart=/sbin/ip netns exec {{.Namespace}} {{.Cmd}} -Ws -f $CONFIG -f $USERCONFIG -p $PIDFILE -L {{.Peer}}

Type=notify
{{end}}
KillMode=mixed
Restart=always
RestartSec=1
LimitNOFILE=2600000

[Install]
WantedBy=multi-user.target
`))

var netnsUnit = template.Must(template.New("netns").Parse(`[Unit]
Description=Configure {{.Namespace}} network namespace
StopWhenUnneeded=true

[Service]
Type=oneshot
RemainAfterExit=yes

# Create the namespace
ExecStart=-/sbin/ip netns add {{.Namespace}}
# Load the system sysctl into the new namespace
ExecStart=-/sbin/ip netns exec {{.Namespace}} sysctl --system
# nf_conntrack_buckets cannot be set in another namespace, its value is
# inherited from the main namespace
ExecStart=-/sbin/sysctl -w net.netfilter.nf_conntrack_buckets=125000
ExecStart=-/sbin/sysctl -w net.netfilter.nf_conntrack_max=125000
ExecStart=-/sbin/sysctl -w net.netfilter.nf_conntrack_expect_max=488
# Kernel module for keepalived LVS listeners
ExecStart=-/sbin/ip netns exec {{.Namespace}} modprobe ip_vs
ExecStart=-/sbin/ip netns exec {{.Namespace}} sysctl -w net.ipv4.ip_forward=1
ExecStart=-/sbin/ip netns exec {{.Namespace}} sysctl -w net.ipv4.vs.conntrack=1
ExecStart=-/sbin/ip netns exec {{.Namespace}} sysctl -w net.ipv6.conf.all.forwarding=1
ExecStart=-/sbin/ip netns exec {{.Namespace}} sysctl -w net.ipv4.vs.expire_nodest_conn=1
ExecStart=-/sbin/ip netns exec {{.Namespace}} sysctl -w net.ipv4.vs.expire_quiescent_template=1
# Move the plugged NICs (matched by MAC) into the namespace and configure them
ExecStart=-{{.Agent}} interface up all
`))

// UnitParams are the values a haproxy service is rendered from.
type UnitParams struct {
	LBID      string
	Cmd       string // haproxy binary
	Config    string
	UserGroup string
	PIDFile   string
	Peer      string
	Namespace string
	Netns     string // name of the namespace unit (without .service)
	Version   Version
}

// Service renders the haproxy service of one load balancer for both
// service managers. The unit is rendered on every upload (GAPS C1), so a
// changed haproxy_cmd, haproxy version or peer name reaches it.
func (p UnitParams) Service() (service.Service, error) {
	var unit bytes.Buffer
	err := haproxyUnit.Execute(&unit, struct {
		UnitParams
		Wrapper bool
	}{p, p.Version.Less(1, 8)})
	if err != nil {
		return service.Service{}, fmt.Errorf("render haproxy unit: %w", err)
	}
	return service.Service{
		Name: UnitName(p.LBID),
		Unit: unit.Bytes(),
		Argv: []string{"/sbin/ip", "netns", "exec", p.Namespace, p.Cmd, "-Ws",
			"-f", p.Config, "-f", p.UserGroup, "-p", p.PIDFile, "-L", p.Peer},
		Checks:       [][]string{{p.Cmd, "-c", "-q", "-f", p.Config, "-f", p.UserGroup, "-L", p.Peer}},
		ReloadSignal: syscall.SIGUSR2,
		PIDFile:      p.PIDFile,
		Notify:       true,
	}, nil
}

// NetnsService renders amphora-netns.service: create the namespace with
// the image's sysctls and restore the plugged NICs by running this agent
// with the configuration files it runs with (GAPS D2).
func NetnsService(namespace string, agentArgv []string) (service.Service, error) {
	quoted := make([]string, len(agentArgv))
	for i, a := range agentArgv {
		quoted[i] = systemdQuote(a)
	}
	var unit bytes.Buffer
	if err := netnsUnit.Execute(&unit, struct{ Namespace, Agent string }{namespace, strings.Join(quoted, " ")}); err != nil {
		return service.Service{}, fmt.Errorf("render netns unit: %w", err)
	}
	return service.Service{Name: NetnsUnitName, Unit: unit.Bytes()}, nil
}

// systemdQuote quotes an argument for an Exec line when needed.
func systemdQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\"'\\$%;") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `$$`, `%`, `%%`)
	return `"` + r.Replace(s) + `"`
}
