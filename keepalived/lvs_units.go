package keepalived

import (
	"fmt"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/service"
)

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

// Service renders the service for both service managers.
//
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
func (p LVSUnitParams) Service() (service.Service, error) {
	id := p.ListenerID
	if !fsutil.ValidID(id) {
		return service.Service{}, fmt.Errorf("render keepalived LVS unit: bad listener id %q", id)
	}
	return unit{
		name: LVSServiceName(id), what: "keepalived LVS unit", dir: p.Paths.Dir,
		Cmd: p.Cmd, IPCmd: p.IPCmd, Namespace: p.Namespace, Netns: p.Netns, LogFacility: p.LogFacility,
		Options: []string{"--namespace=" + p.Namespace, "--check"},
		Config:  p.Paths.Config(id), PIDFile: p.Paths.PIDFile(id),
		VRRPPIDFile: p.Paths.VRRPPIDFile(id), CheckersPIDFile: p.Paths.CheckersPIDFile(id),
	}.service()
}
