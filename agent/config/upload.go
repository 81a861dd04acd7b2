package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/ini.v1"

	"github.com/octavia-go/amphora-agent/certs"
)

// Upload is a configuration PUT /1.0/config may install.
type Upload struct {
	// Doc is what replaces the first --config-file: the uploaded
	// document with the agent's own options merged in (MergeOwnOptions).
	Doc []byte
	// Config is the configuration the agent will start with next time:
	// Doc read together with the other --config-file files.
	Config *Config
	// Kept are the agent's own options carried over from the running
	// configuration, as "[section] option" texts.
	Kept []string
	// Unknown options of the documents (logged, otherwise ignored).
	Unknown []Unknown
}

// PrepareUpload checks an uploaded configuration the way a start of the
// agent would use it and returns what to install. running is the
// configuration in use; others are the --config-file files after the
// first, which the upload does not replace. The check refuses, with an
// error that says why, a document that does not parse, that lacks what
// the agent needs to serve and to heartbeat ([amphora_agent] amphora_id,
// [health_manager] heartbeat_key, and controller_ip_port_list unless the
// running configuration has no destinations either), whose
// server certificate and CA files do not exist or do not parse, or whose
// bind address cannot be listened on.
func PrepareUpload(upload []byte, running *Config, others []Source) (*Upload, error) {
	doc, kept, err := MergeOwnOptions(upload, running, others)
	if err != nil {
		return nil, err
	}
	srcs := append([]Source{{Name: "uploaded configuration", Data: doc}}, others...)
	next, unknown, err := Parse(srcs...)
	if err != nil {
		return nil, err
	}
	next.Files = append([]string(nil), running.Files...)
	if err := CheckStartable(next, running); err != nil {
		return nil, err
	}
	return &Upload{Doc: doc, Config: next, Kept: kept, Unknown: unknown}, nil
}

// CheckStartable refuses a configuration the agent could not serve and
// heartbeat with: the options the controller always renders and the agent
// needs must be set, the server key pair and the client CA must load as
// they do at start-up, and the REST server's address must be usable.
// running (may be nil) is the configuration in use, whose listener
// already holds its own address.
func CheckStartable(c, running *Config) error {
	required := []struct {
		section, option string
		set             bool
	}{
		{"amphora_agent", "amphora_id", strings.TrimSpace(c.AmphoraID) != ""},
		{"health_manager", "heartbeat_key", c.HeartbeatKeySet && c.HeartbeatKey != ""},
		// An agent set up without destinations (a test bed) may stay so;
		// one that heartbeats must not be silenced by an upload.
		{"health_manager", "controller_ip_port_list", len(c.ControllerIPPortList) > 0 ||
			running != nil && len(running.ControllerIPPortList) == 0},
	}
	for _, r := range required {
		if !r.set {
			return &OptionError{Section: r.section, Option: r.option, Problem: "is required (the agent would stop heartbeating)"}
		}
	}
	if err := loadFile(c.AgentServerCert, func(data []byte) error {
		_, err := certs.ParseKeyPair(data)
		return err
	}); err != nil {
		return &OptionError{Section: "amphora_agent", Option: "agent_server_cert", Problem: err.Error()}
	}
	if err := loadFile(c.AgentServerCA, func(data []byte) error {
		_, err := certs.ParseCAs(data)
		return err
	}); err != nil {
		return &OptionError{Section: "amphora_agent", Option: "agent_server_ca", Problem: err.Error()}
	}
	return checkListen(c, running)
}

func loadFile(path string, parse func([]byte) error) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := parse(data); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// checkListen tries the REST server's address. The running listener's
// own address is usable by definition; on its port only the address is
// tried (with a port of the kernel's choice), since the running agent
// holds the port until it restarts.
func checkListen(c, running *Config) error {
	if running != nil && c.ListenAddr() == running.ListenAddr() {
		return nil
	}
	probe := c.ListenAddr()
	if running != nil && c.BindPort == running.BindPort {
		probe = net.JoinHostPort(strings.Trim(c.BindHost, "[]"), "0")
	}
	ln, err := net.Listen("tcp", probe)
	if err != nil {
		return &OptionError{Section: "haproxy_amphora", Option: "bind_host/bind_port",
			Problem: fmt.Sprintf("cannot listen on %s: %v", c.ListenAddr(), unwrapOpError(err))}
	}
	return ln.Close()
}

func unwrapOpError(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// ownOptions are the options of this implementation that the controller's
// rendering of the configuration never carries, with how to write their
// value back.
var ownOptions = []struct {
	section, name string
	value         func(c *Config) string
}{
	{"amphora_agent", "max_request_body_size", func(c *Config) string { return strconv.FormatInt(c.MaxBodySize, 10) }},
	{"amphora_agent", "service_manager", func(c *Config) string { return c.ServiceManager }},
	{"amphora_agent", "network_namespace", func(c *Config) string { return c.Namespace }},
	{"amphora_agent", "systemd_unit_dir", func(c *Config) string { return c.SystemdUnitDir }},
	{"amphora_agent", "haproxy_user_group_config", func(c *Config) string { return c.UserGroupConfig }},
	{"amphora_agent", "pci_rescan_path", func(c *Config) string { return c.PCIRescanPath }},
	{"amphora_agent", "syslog_socket", func(c *Config) string { return c.SyslogSocket }},
}

// keptComment introduces the options MergeOwnOptions carries over.
const keptComment = "# Kept from the running configuration by amphora-agent (options of this agent the controller does not render)"

// MergeOwnOptions applies the merge rule of PUT /1.0/config: an option of
// this agent (ownOptions) that the uploaded document does not set, and
// whose value in the running configuration differs from what the upload
// alone (with the other --config-file files) would give, is added to the
// document with the running value, in its section, so that the next
// start runs as this one. An option the upload sets wins. It returns the
// document to store and the options it kept.
func MergeOwnOptions(upload []byte, running *Config, others []Source) ([]byte, []string, error) {
	srcs := append([]Source{{Name: "uploaded configuration", Data: upload}}, others...)
	alone, _, err := Parse(srcs...)
	if err != nil {
		return nil, nil, err
	}
	set, err := optionsSet(upload)
	if err != nil {
		return nil, nil, err
	}
	bySection := map[string][]string{}
	var sections, kept []string
	for _, o := range ownOptions {
		if set[o.section+"/"+o.name] {
			continue
		}
		v := o.value(running)
		if v == o.value(alone) {
			continue
		}
		line, err := optionLine(o.section, o.name, v, o.value)
		if err != nil {
			return nil, nil, err
		}
		if _, ok := bySection[o.section]; !ok {
			sections = append(sections, o.section)
		}
		bySection[o.section] = append(bySection[o.section], line)
		kept = append(kept, "["+o.section+"] "+o.name)
	}
	doc := upload
	for _, sec := range sections {
		doc = insertInSection(doc, sec, append([]string{keptComment}, bySection[sec]...))
	}
	return doc, kept, nil
}

// optionLine renders "name = value" so that reading it back gives value
// exactly: as it is, or quoted when the reader would trim or unquote it,
// or with continuation lines for a multi-line value.
func optionLine(section, name, value string, get func(*Config) string) (string, error) {
	forms := []string{value, `"` + value + `"`, `""` + value + `""`, `'` + value + `'`,
		strings.ReplaceAll(value, "\n", "\n    ")}
	for _, form := range forms {
		line := name + " = " + form
		c, _, err := Parse(Source{Data: []byte("[" + section + "]\n" + line + "\n")})
		if err == nil && get(c) == value {
			return line, nil
		}
	}
	return "", &OptionError{Section: section, Option: name,
		Problem: fmt.Sprintf("the running value %q cannot be carried over into the uploaded configuration", value)}
}

// optionsSet lists the "section/option" names a document sets
// (normalised like option lookup).
func optionsSet(data []byte) (map[string]bool, error) {
	f, err := ini.LoadSources(ini.LoadOptions{
		IgnoreInlineComment:        true,
		SpaceBeforeInlineComment:   true,
		AllowPythonMultilineValues: true,
	}, data)
	if err != nil {
		return nil, fmt.Errorf("uploaded configuration: %w", err)
	}
	set := map[string]bool{}
	for _, sec := range f.Sections() {
		name := sec.Name()
		if name == ini.DefaultSection {
			name = "DEFAULT"
		}
		for _, k := range sec.Keys() {
			set[name+"/"+normalize(k.Name())] = true
		}
	}
	return set, nil
}

// insertInSection adds lines right after the header of section, or in a
// new section at the end when the document has none.
func insertInSection(doc []byte, section string, lines []string) []byte {
	block := []byte(strings.Join(lines, "\n") + "\n")
	header := regexp.MustCompile(`(?m)^\[` + regexp.QuoteMeta(section) + `\][ \t]*\r?$`)
	if loc := header.FindIndex(doc); loc != nil {
		end := loc[1]
		var out bytes.Buffer
		out.Write(doc[:end])
		if end == len(doc) {
			out.WriteByte('\n')
		} else {
			out.WriteByte(doc[end]) // the header's newline
			end++
		}
		out.Write(block)
		out.Write(doc[end:])
		return out.Bytes()
	}
	var out bytes.Buffer
	out.Write(doc)
	if len(doc) > 0 && doc[len(doc)-1] != '\n' {
		out.WriteByte('\n')
	}
	out.WriteString("\n[" + section + "]\n")
	out.Write(block)
	return out.Bytes()
}

// RestartOnly lists the options that differ between cur and next but take
// effect only at the next start of the agent (every option but the
// run-time ones WithMutable carries).
func RestartOnly(cur, next *Config) []string {
	var out []string
	add := func(name string, changed bool) {
		if changed {
			out = append(out, name)
		}
	}
	add("[DEFAULT] debug", cur.Debug != next.Debug)
	add("[haproxy_amphora] base_path", cur.BasePath != next.BasePath)
	add("[haproxy_amphora] base_cert_dir", cur.BaseCertDir != next.BaseCertDir)
	add("[haproxy_amphora] bind_host", cur.BindHost != next.BindHost)
	add("[haproxy_amphora] bind_port", cur.BindPort != next.BindPort)
	add("[haproxy_amphora] haproxy_cmd", cur.HAProxyCmd != next.HAProxyCmd)
	add("[amphora_agent] agent_server_ca", cur.AgentServerCA != next.AgentServerCA)
	add("[amphora_agent] agent_server_cert", cur.AgentServerCert != next.AgentServerCert)
	add("[amphora_agent] agent_server_network_dir", cur.AgentServerNetworkDir != next.AgentServerNetworkDir)
	add("[amphora_agent] agent_request_read_timeout", cur.AgentRequestReadTimeout != next.AgentRequestReadTimeout)
	add("[amphora_agent] agent_tls_protocol", cur.AgentTLSProtocol != next.AgentTLSProtocol)
	add("[amphora_agent] user_log_facility", cur.UserLogFacility != next.UserLogFacility)
	add("[amphora_agent] amphora_id", cur.AmphoraID != next.AmphoraID)
	add("[amphora_agent] amphora_udp_driver", cur.AmphoraUDPDriver != next.AmphoraUDPDriver)
	for _, o := range ownOptions {
		add("["+o.section+"] "+o.name, o.value(cur) != o.value(next))
	}
	return out
}
