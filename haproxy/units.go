package haproxy

import (
	"bytes"
	"fmt"
	"syscall"
	"text/template"

	"github.com/octavia-go/amphora-agent/service"
)

// UnitName is the service name of a load balancer's haproxy.
func UnitName(lbID string) string { return "haproxy-" + lbID }

var haproxyUnit = template.Must(template.New("haproxy").Parse(`[Unit]
Description=HAProxy Load Balancer
After=network.target syslog.service{{if .Netns}} {{.Netns}}.service{{end}}
Before=octavia-keepalived.service
Wants=syslog.service
{{- if .Netns}}
Requires={{.Netns}}.service
{{- end}}
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

// UnitParams are the values a haproxy service is rendered from.
type UnitParams struct {
	LBID      string
	Cmd       string // haproxy binary
	Config    string
	UserGroup string
	PIDFile   string
	Peer      string
	Namespace string
	Netns     string // the unit creating the namespace, without .service ("" = none)
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
