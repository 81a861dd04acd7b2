// Package config reads the agent configuration: the oslo.config style ini
// file the Octavia controller renders for every amphora
// (/etc/octavia/amphora-agent.conf), plus the few options of our own.
//
// Option names are matched like oslo does: '-' and '_' are the same
// character. Later files override earlier ones. Unknown options are
// reported (the caller logs them at debug level) and otherwise ignored; a
// value that cannot be parsed is an error naming the file, the section,
// the option and the problem.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/ini.v1"

	"github.com/octavia-go/amphora-agent/internal/logging"
)

// Topologies of a load balancer, as in [controller_worker] loadbalancer_topology.
const (
	TopologySingle        = "SINGLE"
	TopologyActiveStandby = "ACTIVE_STANDBY"
)

// Service managers the agent can drive haproxy and keepalived with.
const (
	ServiceManagerAuto    = "auto"    // systemd when it runs as the system manager, else builtin
	ServiceManagerSystemd = "systemd" // unit files, controlled over D-Bus
	ServiceManagerBuiltin = "builtin" // the agent supervises the processes itself
)

// Config is the whole agent configuration. Build it with Load or Parse;
// treat it as read-only afterwards (Store hands out new copies on change).
type Config struct {
	// Files are the --config-file paths, in order.
	Files []string

	// [DEFAULT]
	Debug bool
	// UseSyslog and SyslogLogFacility (mutable) send the agent's records
	// to the local syslog; the facility is LOG_LOCAL<n>-style, "" for
	// unset (then local<AdministrativeLogFacility>).
	UseSyslog         bool
	SyslogLogFacility string

	// [haproxy_amphora]
	BasePath    string // /var/lib/octavia
	BaseCertDir string // /var/lib/octavia/certs
	BindHost    string // ::
	BindPort    int    // 9443
	HAProxyCmd  string // /usr/sbin/haproxy

	// [health_manager] (mutable through PUT /1.0/config)
	ControllerIPPortList []string
	HeartbeatInterval    time.Duration
	HeartbeatKey         string
	HeartbeatKeySet      bool // false when the option is absent (the reference would sign with "None")

	// [amphora_agent]
	AgentServerCA             string
	AgentServerCert           string
	AgentServerNetworkDir     string
	AgentRequestReadTimeout   time.Duration
	AgentTLSProtocol          string
	AdministrativeLogFacility int // mutable
	UserLogFacility           int
	AmphoraID                 string
	AmphoraUDPDriver          string

	// [amphora_agent] options of this implementation (not rendered by the controller).
	MaxBodySize     int64  // request body cap for uploads, bytes
	ServiceManager  string // auto, systemd or builtin
	Namespace       string // data-plane network namespace, amphora-haproxy
	SystemdUnitDir  string // where unit files are written, /usr/lib/systemd/system
	UserGroupConfig string // haproxy user/group snippet, /var/lib/octavia/haproxy-default-user-group.conf
	PCIRescanPath   string // poked when a plugged MAC is not found yet; "" disables
	SyslogSocket    string // the syslog daemon's socket, /dev/log

	// [controller_worker] (mutable)
	LoadBalancerTopology string
}

// Defaults returns the configuration with every option at its default,
// the values the reference agent uses when an option is absent.
func Defaults() *Config {
	return &Config{
		BasePath:                  "/var/lib/octavia",
		BaseCertDir:               "/var/lib/octavia/certs",
		BindHost:                  "::",
		BindPort:                  9443,
		HAProxyCmd:                "/usr/sbin/haproxy",
		ControllerIPPortList:      nil,
		HeartbeatInterval:         10 * time.Second,
		AgentServerCA:             "/etc/octavia/certs/client_ca.pem",
		AgentServerCert:           "/etc/octavia/certs/server.pem",
		AgentServerNetworkDir:     "/etc/octavia/interfaces",
		AgentRequestReadTimeout:   180 * time.Second,
		AgentTLSProtocol:          "TLSv1.2",
		AdministrativeLogFacility: 1,
		UserLogFacility:           0,
		AmphoraUDPDriver:          "keepalived_lvs",
		MaxBodySize:               64 << 20,
		ServiceManager:            ServiceManagerAuto,
		Namespace:                 "amphora-haproxy",
		SystemdUnitDir:            "/usr/lib/systemd/system",
		UserGroupConfig:           "/var/lib/octavia/haproxy-default-user-group.conf",
		PCIRescanPath:             "/sys/bus/pci/rescan",
		SyslogSocket:              "/dev/log",
		LoadBalancerTopology:      TopologySingle,
	}
}

// Clone returns a deep copy of c.
func (c *Config) Clone() *Config {
	n := *c
	n.Files = append([]string(nil), c.Files...)
	n.ControllerIPPortList = append([]string(nil), c.ControllerIPPortList...)
	return &n
}

// MutableEqual reports whether the options PUT /1.0/config may change at
// run time are the same in c and o.
func (c *Config) MutableEqual(o *Config) bool {
	return strings.Join(c.ControllerIPPortList, ",") == strings.Join(o.ControllerIPPortList, ",") &&
		c.HeartbeatInterval == o.HeartbeatInterval &&
		c.HeartbeatKey == o.HeartbeatKey && c.HeartbeatKeySet == o.HeartbeatKeySet &&
		c.LoadBalancerTopology == o.LoadBalancerTopology &&
		c.UseSyslog == o.UseSyslog && c.SyslogLogFacility == o.SyslogLogFacility &&
		c.AdministrativeLogFacility == o.AdministrativeLogFacility
}

// WithMutable returns a copy of c carrying the mutable options of o.
func (c *Config) WithMutable(o *Config) *Config {
	n := c.Clone()
	n.ControllerIPPortList = append([]string(nil), o.ControllerIPPortList...)
	n.HeartbeatInterval = o.HeartbeatInterval
	n.HeartbeatKey = o.HeartbeatKey
	n.HeartbeatKeySet = o.HeartbeatKeySet
	n.LoadBalancerTopology = o.LoadBalancerTopology
	n.UseSyslog, n.SyslogLogFacility = o.UseSyslog, o.SyslogLogFacility
	n.AdministrativeLogFacility = o.AdministrativeLogFacility
	return n
}

// ActiveStandby reports whether the amphora is part of an ACTIVE_STANDBY pair.
func (c *Config) ActiveStandby() bool { return c.LoadBalancerTopology == TopologyActiveStandby }

// ListenAddr is the host:port the REST server binds.
func (c *Config) ListenAddr() string {
	return net.JoinHostPort(strings.Trim(c.BindHost, "[]"), strconv.Itoa(c.BindPort))
}

// OptionError describes a value that cannot be used.
type OptionError struct {
	File    string // may be empty when the value came from a default or the command line
	Section string
	Option  string
	Problem string
}

func (e *OptionError) Error() string {
	where := fmt.Sprintf("[%s] %s", e.Section, e.Option)
	if e.File != "" {
		where = e.File + ": " + where
	}
	return where + ": " + e.Problem
}

// Unknown is an option found in a file that the agent does not use.
type Unknown struct {
	File, Section, Option string
}

type kind int

const (
	kString kind = iota
	kInt
	kBool
	kList
	kSeconds
	kFacility
	kTopology
	kTLS
	kPort
	kSize
	kServiceManager
	kSyslogFacility
)

type option struct {
	section, name string
	kind          kind
	set           func(c *Config, v any)
}

// options lists every option the agent reads. Options the controller
// renders but the agent does not use are listed with a nil setter so
// they are not reported as unknown.
var options = []option{
	{"DEFAULT", "debug", kBool, func(c *Config, v any) { c.Debug = v.(bool) }},
	{"DEFAULT", "use_syslog", kBool, func(c *Config, v any) { c.UseSyslog = v.(bool) }},
	{"DEFAULT", "syslog_log_facility", kSyslogFacility, func(c *Config, v any) { c.SyslogLogFacility = v.(string) }},
	{"DEFAULT", "verbose", kBool, nil},
	{"DEFAULT", "log_file", kString, nil},
	{"DEFAULT", "log_dir", kString, nil},
	{"DEFAULT", "use_stderr", kBool, nil},
	{"DEFAULT", "use_journal", kBool, nil},

	{"haproxy_amphora", "base_path", kString, func(c *Config, v any) { c.BasePath = v.(string) }},
	{"haproxy_amphora", "base_cert_dir", kString, func(c *Config, v any) { c.BaseCertDir = v.(string) }},
	{"haproxy_amphora", "bind_host", kString, func(c *Config, v any) { c.BindHost = v.(string) }},
	{"haproxy_amphora", "bind_port", kPort, func(c *Config, v any) { c.BindPort = v.(int) }},
	{"haproxy_amphora", "haproxy_cmd", kString, func(c *Config, v any) { c.HAProxyCmd = v.(string) }},
	// The controller's template writes the log facilities here although
	// the reference reads them from [amphora_agent] only; we honour both,
	// [amphora_agent] winning (applied in Parse).
	{"haproxy_amphora", "administrative_log_facility", kFacility, nil},
	{"haproxy_amphora", "user_log_facility", kFacility, nil},
	{"haproxy_amphora", "respawn_count", kInt, nil},
	{"haproxy_amphora", "respawn_interval", kInt, nil},
	{"haproxy_amphora", "use_upstart", kBool, nil},

	{"health_manager", "controller_ip_port_list", kList, func(c *Config, v any) { c.ControllerIPPortList = v.([]string) }},
	{"health_manager", "heartbeat_interval", kSeconds, func(c *Config, v any) { c.HeartbeatInterval = v.(time.Duration) }},
	{"health_manager", "heartbeat_key", kString, func(c *Config, v any) { c.HeartbeatKey = v.(string); c.HeartbeatKeySet = true }},

	{"amphora_agent", "agent_server_ca", kString, func(c *Config, v any) { c.AgentServerCA = v.(string) }},
	{"amphora_agent", "agent_server_cert", kString, func(c *Config, v any) { c.AgentServerCert = v.(string) }},
	{"amphora_agent", "agent_server_network_dir", kString, func(c *Config, v any) { c.AgentServerNetworkDir = v.(string) }},
	{"amphora_agent", "agent_server_network_file", kString, nil},
	{"amphora_agent", "agent_request_read_timeout", kSeconds, func(c *Config, v any) { c.AgentRequestReadTimeout = v.(time.Duration) }},
	{"amphora_agent", "agent_tls_protocol", kTLS, func(c *Config, v any) { c.AgentTLSProtocol = v.(string) }},
	{"amphora_agent", "administrative_log_facility", kFacility, func(c *Config, v any) { c.AdministrativeLogFacility = v.(int) }},
	{"amphora_agent", "user_log_facility", kFacility, func(c *Config, v any) { c.UserLogFacility = v.(int) }},
	{"amphora_agent", "amphora_id", kString, func(c *Config, v any) { c.AmphoraID = v.(string) }},
	{"amphora_agent", "amphora_udp_driver", kString, func(c *Config, v any) { c.AmphoraUDPDriver = v.(string) }},
	{"amphora_agent", "max_request_body_size", kSize, func(c *Config, v any) { c.MaxBodySize = v.(int64) }},
	{"amphora_agent", "service_manager", kServiceManager, func(c *Config, v any) { c.ServiceManager = v.(string) }},
	{"amphora_agent", "network_namespace", kString, func(c *Config, v any) { c.Namespace = v.(string) }},
	{"amphora_agent", "systemd_unit_dir", kString, func(c *Config, v any) { c.SystemdUnitDir = v.(string) }},
	{"amphora_agent", "haproxy_user_group_config", kString, func(c *Config, v any) { c.UserGroupConfig = v.(string) }},
	{"amphora_agent", "pci_rescan_path", kString, func(c *Config, v any) { c.PCIRescanPath = v.(string) }},
	{"amphora_agent", "syslog_socket", kString, func(c *Config, v any) { c.SyslogSocket = v.(string) }},

	{"controller_worker", "loadbalancer_topology", kTopology, func(c *Config, v any) { c.LoadBalancerTopology = v.(string) }},
}

func normalize(name string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimSpace(name)), "-", "_")
}

func lookup(section, name string) *option {
	for i := range options {
		o := &options[i]
		if o.section == section && o.name == name {
			return o
		}
	}
	return nil
}

// Load reads the given files in order (later ones override earlier ones)
// on top of the defaults and validates the result.
func Load(files ...string) (*Config, []Unknown, error) {
	srcs := make([]Source, 0, len(files))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, fmt.Errorf("config file %s: %w", f, err)
		}
		srcs = append(srcs, Source{Name: f, Data: data})
	}
	c, unknown, err := Parse(srcs...)
	if err != nil {
		return nil, unknown, err
	}
	c.Files = append([]string(nil), files...)
	return c, unknown, nil
}

// Source is one ini document and the name errors refer to it by.
type Source struct {
	Name string
	Data []byte
}

// Parse is Load for in-memory documents.
func Parse(srcs ...Source) (*Config, []Unknown, error) {
	c := Defaults()
	var unknown []Unknown
	var adminFacility, userFacility *int // from [haproxy_amphora], see the option table
	agentSetsAdmin, agentSetsUser := false, false
	for _, src := range srcs {
		f, err := ini.LoadSources(ini.LoadOptions{
			IgnoreInlineComment:        true, // oslo keeps '#' inside values (keys may contain it)
			SpaceBeforeInlineComment:   true,
			AllowPythonMultilineValues: true,
			Insensitive:                false,
		}, src.Data)
		if err != nil {
			return nil, nil, fmt.Errorf("config file %s: %w", src.Name, err)
		}
		for _, sec := range f.Sections() {
			secName := sec.Name()
			if secName == ini.DefaultSection {
				secName = "DEFAULT"
			}
			for _, key := range sec.Keys() {
				name := normalize(key.Name())
				o := lookup(secName, name)
				if o == nil {
					unknown = append(unknown, Unknown{File: src.Name, Section: secName, Option: key.Name()})
					continue
				}
				v, problem := parseValue(o.kind, key.Value())
				if problem != "" {
					return nil, unknown, &OptionError{File: src.Name, Section: secName, Option: key.Name(), Problem: problem}
				}
				switch {
				case secName == "haproxy_amphora" && name == "administrative_log_facility":
					x := v.(int)
					adminFacility = &x
				case secName == "haproxy_amphora" && name == "user_log_facility":
					x := v.(int)
					userFacility = &x
				case secName == "amphora_agent" && name == "administrative_log_facility":
					agentSetsAdmin = true
				case secName == "amphora_agent" && name == "user_log_facility":
					agentSetsUser = true
				}
				if o.set != nil {
					o.set(c, v)
				}
			}
		}
	}
	if adminFacility != nil && !agentSetsAdmin {
		c.AdministrativeLogFacility = *adminFacility
	}
	if userFacility != nil && !agentSetsUser {
		c.UserLogFacility = *userFacility
	}
	if err := c.validate(); err != nil {
		return nil, unknown, err
	}
	return c, unknown, nil
}

func (c *Config) validate() error {
	if c.BasePath == "" || !filepath.IsAbs(c.BasePath) {
		return &OptionError{Section: "haproxy_amphora", Option: "base_path", Problem: fmt.Sprintf("%q is not an absolute path", c.BasePath)}
	}
	if c.BaseCertDir == "" || !filepath.IsAbs(c.BaseCertDir) {
		return &OptionError{Section: "haproxy_amphora", Option: "base_cert_dir", Problem: fmt.Sprintf("%q is not an absolute path", c.BaseCertDir)}
	}
	if h := strings.Trim(c.BindHost, "[]"); h != "" && net.ParseIP(h) == nil {
		// oslo types bind_host as an IP address; a name would be resolved
		// at bind time, which the reference does not do either.
		return &OptionError{Section: "haproxy_amphora", Option: "bind_host", Problem: fmt.Sprintf("%q is not an IP address", c.BindHost)}
	}
	for _, e := range c.ControllerIPPortList {
		if _, _, err := SplitHostPort(e); err != nil {
			return &OptionError{Section: "health_manager", Option: "controller_ip_port_list", Problem: err.Error()}
		}
	}
	if c.HeartbeatInterval <= 0 {
		return &OptionError{Section: "health_manager", Option: "heartbeat_interval", Problem: "must be at least 1 second"}
	}
	if c.AgentRequestReadTimeout <= 0 {
		return &OptionError{Section: "amphora_agent", Option: "agent_request_read_timeout", Problem: "must be at least 1 second"}
	}
	if c.Namespace == "" || strings.ContainsAny(c.Namespace, "/ \t") {
		return &OptionError{Section: "amphora_agent", Option: "network_namespace", Problem: fmt.Sprintf("%q is not a valid namespace name", c.Namespace)}
	}
	return nil
}

// SplitHostPort splits a controller_ip_port_list entry: host:port,
// [v6]:port, or a bare IPv6 address followed by :port (split at the last
// colon, as the reference does).
func SplitHostPort(entry string) (host string, port int, err error) {
	e := strings.TrimSpace(entry)
	i := strings.LastIndex(e, ":")
	if i <= 0 || i == len(e)-1 {
		return "", 0, fmt.Errorf("entry %q is not host:port", entry)
	}
	host, ps := e[:i], e[i+1:]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if host == "" {
		return "", 0, fmt.Errorf("entry %q has no host", entry)
	}
	port, perr := strconv.Atoi(ps)
	if perr != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("entry %q: port %q is not a number between 1 and 65535", entry, ps)
	}
	return host, port, nil
}

func parseValue(k kind, raw string) (any, string) {
	s := strings.TrimSpace(raw)
	// oslo strips one level of matching quotes around string values.
	if len(s) >= 2 && (s[0] == '"' && s[len(s)-1] == '"' || s[0] == '\'' && s[len(s)-1] == '\'') {
		s = s[1 : len(s)-1]
	}
	switch k {
	case kString:
		return s, ""
	case kInt:
		n, err := strconv.Atoi(s)
		if err != nil {
			return nil, fmt.Sprintf("%q is not an integer", s)
		}
		return n, ""
	case kPort:
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 65535 {
			return nil, fmt.Sprintf("%q is not a port number (0-65535)", s)
		}
		return n, ""
	case kSeconds:
		n, err := strconv.Atoi(s)
		if err != nil {
			return nil, fmt.Sprintf("%q is not a whole number of seconds", s)
		}
		if n < 1 {
			return nil, fmt.Sprintf("%d must be at least 1 second", n)
		}
		return time.Duration(n) * time.Second, ""
	case kSize:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1024 {
			return nil, fmt.Sprintf("%q is not a size in bytes (at least 1024)", s)
		}
		return n, ""
	case kFacility:
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 7 {
			return nil, fmt.Sprintf("%q is not a log facility number (0-7)", s)
		}
		return n, ""
	case kBool:
		switch strings.ToLower(s) {
		case "true", "yes", "on", "1", "t", "y":
			return true, ""
		case "false", "no", "off", "0", "f", "n", "":
			return false, ""
		}
		return nil, fmt.Sprintf("%q is not a boolean", s)
	case kList:
		var out []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		return out, ""
	case kTopology:
		u := strings.ToUpper(s)
		if u != TopologySingle && u != TopologyActiveStandby {
			return nil, fmt.Sprintf("%q is not one of SINGLE, ACTIVE_STANDBY", s)
		}
		return u, ""
	case kTLS:
		if _, err := TLSMinVersion(s); err != nil {
			return nil, err.Error()
		}
		return s, ""
	case kServiceManager:
		l := strings.ToLower(s)
		if l != ServiceManagerAuto && l != ServiceManagerSystemd && l != ServiceManagerBuiltin {
			return nil, fmt.Sprintf("%q is not one of auto, systemd, builtin", s)
		}
		return l, ""
	case kSyslogFacility:
		if _, err := logging.ParseFacility(s); err != nil {
			return nil, err.Error()
		}
		return s, ""
	}
	return nil, "unsupported option kind"
}

// TLS protocol versions as crypto/tls numbers, without importing crypto/tls here.
const (
	tls12 = 0x0303
	tls13 = 0x0304
)

// TLSMinVersion maps agent_tls_protocol to the minimum TLS version the
// server accepts. The reference pins exactly one version; we treat the
// option as a floor that never goes below TLS 1.2, so TLS 1.3 clients are
// welcome and TLS 1.2 clients (every Octavia controller) keep working.
func TLSMinVersion(name string) (uint16, error) {
	switch strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(name), "_", ".")) {
	case "SSLV3", "TLSV1", "TLSV1.0", "TLSV1.1", "TLSV1.2":
		return tls12, nil
	case "TLSV1.3":
		return tls13, nil
	}
	return 0, fmt.Errorf("%q is not one of SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3", name)
}

// ErrNoConfigFile is returned when an operation needs the file the agent
// was started with and there is none.
var ErrNoConfigFile = errors.New("the agent was started without --config-file")
