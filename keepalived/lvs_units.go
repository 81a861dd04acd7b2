package keepalived

import (
	"bytes"
	"fmt"
	"strconv"
	"syscall"
	"text/template"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/service"
)

// The LVS unit is the reference's octavia-keepalivedlvs-<id>.service
// (SERVICES.md §7.2) with three changes:
//
//   - --namespace=<ns> overrides the configuration's net_namespace line
//     (the controller always writes amphora-haproxy), so keepalived runs in
//     the namespace the agent is configured with;
//   - --check runs the health-checker subsystem only: the configuration
//     is LVS-only (keepalived 2.2.7 would start no VRRP child for it
//     anyway; this makes sure it never does);
//   - a crashed keepalived is restarted, as for the VRRP unit.
var lvsUnitTemplate = template.Must(template.New("keepalivedlvs").Parse(generatedMarker + `[Unit]
Description=Keepalive Daemon (LVS and VRRP)
After=network-online.target{{if .Netns}} {{.Netns}}.service{{end}}
Wants=network-online.target
{{- if .Netns}}
Requires={{.Netns}}.service
{{- end}}

[Service]
# Force context as we start keepalived under "ip netns exec"
SELinuxContext=system_u:system_r:keepalived_t:s0
Type=forking
KillMode=process
ExecStart={{.IPCmd}} netns exec {{.Namespace}} {{.Cmd}} --log-facility={{.LogFacility}} --namespace={{.Namespace}} --check -f {{.Paths.Config .ListenerID}} -p {{.Paths.PIDFile .ListenerID}} -r {{.Paths.VRRPPIDFile .ListenerID}} -c {{.Paths.CheckersPIDFile .ListenerID}}
ExecReload=/bin/kill -HUP $MAINPID
PIDFile={{.Paths.PIDFile .ListenerID}}
Restart=on-failure
RestartSec=1

[Install]
WantedBy=multi-user.target
`))

// LVSUnitParams are the values an LVS listener's service is rendered from.
type LVSUnitParams struct {
	ListenerID  string
	Cmd         string // keepalived binary
	IPCmd       string // iproute2 binary
	Namespace   string // data-plane namespace
	Netns       string // unit creating the namespace ("" = none)
	LogFacility int    // syslog LOG_LOCAL<n>
	Paths       LVSPaths
}

// Service renders the service for both service managers: the unit text
// for systemd (keepalived forks) and, for the built-in supervisor, the
// same program in the foreground (-n) logging to its output (-l).
func (p LVSUnitParams) Service() (service.Service, error) {
	if !fsutil.ValidID(p.ListenerID) {
		return service.Service{}, fmt.Errorf("render keepalived LVS unit: bad listener id %q", p.ListenerID)
	}
	for name, v := range map[string]string{"cmd": p.Cmd, "ip": p.IPCmd, "namespace": p.Namespace, "dir": p.Paths.Dir} {
		if v == "" || bytes.ContainsAny([]byte(v), " \t\n\"'\\$%;") {
			return service.Service{}, fmt.Errorf("render keepalived LVS unit: unusable %s %q", name, v)
		}
	}
	var unit bytes.Buffer
	if err := lvsUnitTemplate.Execute(&unit, p); err != nil {
		return service.Service{}, fmt.Errorf("render keepalived LVS unit: %w", err)
	}
	id := p.ListenerID
	return service.Service{
		Name: LVSServiceName(id),
		Unit: unit.Bytes(),
		Argv: []string{p.IPCmd, "netns", "exec", p.Namespace, p.Cmd, "-n", "-l",
			"--log-facility=" + strconv.Itoa(p.LogFacility), "--namespace=" + p.Namespace, "--check",
			"-f", p.Paths.Config(id), "-p", p.Paths.PIDFile(id),
			"-r", p.Paths.VRRPPIDFile(id), "-c", p.Paths.CheckersPIDFile(id)},
		ReloadSignal: syscall.SIGHUP,
		PIDFile:      p.Paths.PIDFile(id),
	}, nil
}
