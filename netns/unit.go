package netns

import (
	"bytes"
	"fmt"
	"strings"
	"text/template"
)

// UnitName is the systemd service (without ".service") that creates the
// data-plane namespace at boot and brings the plugged NICs back into it.
// The haproxy and keepalived units require it.
const UnitName = "amphora-netns"

var unitTemplate = template.Must(template.New("netns").Parse(`[Unit]
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

// Unit renders amphora-netns.service: create the namespace with the
// image's sysctls and restore the plugged NICs by running the agent
// (agentArgv: its binary and --config-file arguments) with "interface up
// all" (GAPS D2: the agent's own configuration, not a default one).
func Unit(namespace string, agentArgv []string) ([]byte, error) {
	if err := checkName(namespace); err != nil {
		return nil, err
	}
	quoted := make([]string, len(agentArgv))
	for i, a := range agentArgv {
		quoted[i] = systemdQuote(a)
	}
	var unit bytes.Buffer
	if err := unitTemplate.Execute(&unit, struct{ Namespace, Agent string }{namespace, strings.Join(quoted, " ")}); err != nil {
		return nil, fmt.Errorf("render %s unit: %w", UnitName, err)
	}
	return unit.Bytes(), nil
}

// systemdQuote quotes an argument for an Exec line when needed.
func systemdQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\"'\\$%;") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `$$`, `%`, `%%`)
	return `"` + r.Replace(s) + `"`
}
