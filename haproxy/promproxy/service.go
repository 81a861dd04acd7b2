package promproxy

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"text/template"

	"github.com/octavia-go/amphora-agent/service"
)

// ServiceName is the proxy's service (amphora-prometheus-proxy.service).
const ServiceName = "amphora-prometheus-proxy"

// ServiceParams are what the proxy's service is rendered from.
type ServiceParams struct {
	// IPCmd runs the proxy inside the namespace (/sbin/ip).
	IPCmd     string
	Namespace string
	// NetnsUnit is the unit creating the namespace (amphora-netns).
	NetnsUnit string
	// Agent is how the proxy runs this agent: the binary and its
	// --config-file arguments.
	Agent []string
	// PIDFile is written by the proxy (builtin supervisor: how a running
	// proxy is found again after an agent restart).
	PIDFile string
}

// The unit has no [Install] section: the agent starts it while a load
// balancer has a PROMETHEUS listener and stops it when none has.
// Parsed on first use (a load balancer with a PROMETHEUS listener).
var unitTemplate = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("unit").Parse(unitText))
})

const unitText = `[Unit]
Description=Octavia amphora Prometheus proxy (Octavia metrics from haproxy's exporter)
After=network.target syslog.service {{.NetnsUnit}}.service
Wants=syslog.service {{.NetnsUnit}}.service
StartLimitIntervalSec=0

[Service]
Type=notify
ExecStart={{.IPCmd}} netns exec {{.Namespace}} {{.Agent}} prometheus-proxy
KillMode=mixed
Restart=always
RestartSec=2
`

// Service renders the proxy's service for both managers.
func (p ServiceParams) Service() (service.Service, error) {
	quoted := make([]string, len(p.Agent))
	for i, a := range p.Agent {
		quoted[i] = systemdQuote(a)
	}
	var unit bytes.Buffer
	err := unitTemplate().Execute(&unit, struct {
		ServiceParams
		Agent string
	}{p, strings.Join(quoted, " ")})
	if err != nil {
		return service.Service{}, fmt.Errorf("render %s unit: %w", ServiceName, err)
	}
	argv := append([]string{p.IPCmd, "netns", "exec", p.Namespace}, p.Agent...)
	argv = append(argv, "prometheus-proxy")
	if p.PIDFile != "" {
		argv = append(argv, "--pid-file", p.PIDFile)
	}
	return service.Service{
		Name:    ServiceName,
		Unit:    unit.Bytes(),
		Argv:    argv,
		PIDFile: p.PIDFile,
		Notify:  true,
	}, nil
}

// systemdQuote quotes an argument for an Exec line when needed.
func systemdQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\"'\\$%;") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `$$`, `%`, `%%`)
	return `"` + r.Replace(s) + `"`
}
