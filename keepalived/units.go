package keepalived

import (
	"bytes"
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"text/template"

	"github.com/octavia-go/amphora-agent/service"
)

// unitTemplate is the unit of every keepalived the agent runs, the VRRP
// one (UnitParams) and those of the LVS listeners (LVSUnitParams); they
// differ only in their options and files. Parsed on first use, like
// the package's expressions: the agent's heap holds it only once a
// keepalived runs.
var unitTemplate = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("keepalived").Parse(unitText))
})

const unitText = `[Unit]
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
# keepalived refuses to start while a pid file names a live process. The
# files outlive a crash or a hard reset in this directory, and a recycled
# pid can then block every start; when the unit starts, none of its
# processes runs, so what they name is not this keepalived.
ExecStartPre=-/bin/rm -f {{.PIDFile}} {{.VRRPPIDFile}} {{.CheckersPIDFile}}
ExecStart={{.IPCmd}} netns exec {{.Namespace}} {{.Cmd}} --log-facility={{.LogFacility}}{{range .Options}} {{.}}{{end}} -f {{.Config}} -p {{.PIDFile}} -r {{.VRRPPIDFile}} -c {{.CheckersPIDFile}}
ExecReload=/bin/kill -HUP $MAINPID
PIDFile={{.PIDFile}}
Restart=on-failure
RestartSec=1

[Install]
WantedBy=multi-user.target
`

// unit is what a keepalived service is rendered from.
type unit struct {
	name string // the service name
	what string // what is rendered, for errors
	dir  string // the directory of its files

	Cmd, IPCmd, Namespace, Netns string
	LogFacility                  int
	Options                      []string // after --log-facility
	Config, PIDFile              string
	VRRPPIDFile, CheckersPIDFile string
}

// service renders the service for both service managers: the unit text
// for systemd (keepalived forks) and, for the built-in supervisor, the
// same program in the foreground (-n) logging to its output (-l), which
// the supervisor keeps in its service log.
func (u unit) service() (service.Service, error) {
	for name, v := range map[string]string{"cmd": u.Cmd, "ip": u.IPCmd, "namespace": u.Namespace, "dir": u.dir} {
		if v == "" || bytes.ContainsAny([]byte(v), " \t\n\"'\\$%;") {
			return service.Service{}, fmt.Errorf("render %s: unusable %s %q", u.what, name, v)
		}
	}
	var text bytes.Buffer
	if err := unitTemplate().Execute(&text, u); err != nil {
		return service.Service{}, fmt.Errorf("render %s: %w", u.what, err)
	}
	argv := []string{u.IPCmd, "netns", "exec", u.Namespace, u.Cmd, "-n", "-l", "--log-facility=" + strconv.Itoa(u.LogFacility)}
	argv = append(argv, u.Options...)
	return service.Service{
		Name:          u.name,
		Unit:          text.Bytes(),
		Argv:          append(argv, "-f", u.Config, "-p", u.PIDFile, "-r", u.VRRPPIDFile, "-c", u.CheckersPIDFile),
		ReloadSignal:  syscall.SIGHUP,
		PIDFile:       u.PIDFile,
		ChildPIDFiles: []string{u.VRRPPIDFile, u.CheckersPIDFile},
	}, nil
}

// UnitParams are the values the keepalived service is rendered from.
type UnitParams struct {
	Cmd         string // keepalived binary
	IPCmd       string // iproute2 binary
	Namespace   string // data-plane namespace
	Netns       string // unit creating the namespace ("" = none)
	LogFacility int    // syslog LOG_LOCAL<n>, [amphora_agent] administrative_log_facility
	Paths       Paths
}

// Service renders the service for both service managers.
//
// The unit follows the reference's octavia-keepalived.service with two
// changes: the child pid files are explicit (see the package comment),
// and a crashed keepalived is restarted like the built-in supervisor
// does, with systemd's default start limit as the last resort (then the
// pid file is gone and the heartbeats stop, so the controller fails the
// amphora over). KillMode=process stays: keepalived's main process takes
// its children down in order on SIGTERM, and when it dies the VRRP child
// shuts down by itself (priority 0 advert, VIPs removed), which a
// SIGKILL to the whole group would cut short.
func (p UnitParams) Service() (service.Service, error) {
	return unit{
		name: ServiceName, what: "keepalived unit", dir: p.Paths.Dir,
		Cmd: p.Cmd, IPCmd: p.IPCmd, Namespace: p.Namespace, Netns: p.Netns, LogFacility: p.LogFacility,
		Config: p.Paths.Config(), PIDFile: p.Paths.PIDFile(),
		VRRPPIDFile: p.Paths.VRRPPIDFile(), CheckersPIDFile: p.Paths.CheckersPIDFile(),
	}.service()
}
