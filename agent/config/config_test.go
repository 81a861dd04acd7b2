package config

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// controllerRendered is what the controller's amphora_agent_conf.template
// produces (values as in a devstack deployment).
const controllerRendered = `[DEFAULT]
debug = False
use_syslog = True
syslog_log_facility = LOG_LOCAL1

[haproxy_amphora]
base_cert_dir = /var/lib/octavia/certs
base_path = /var/lib/octavia
bind_host = ::
bind_port = 9443
haproxy_cmd = /usr/sbin/haproxy
respawn_count = 2
respawn_interval = 2
use_upstart = True
user_log_facility = 0
administrative_log_facility = 1

[health_manager]
controller_ip_port_list = 192.0.2.10:5555, [2001:db8::10]:5555, 2001:db8::11:5555
heartbeat_interval = 10
heartbeat_key = insecure

[amphora_agent]
agent_server_ca = /etc/octavia/certs/client_ca.pem
agent_server_cert = /etc/octavia/certs/server.pem
agent_request_read_timeout = 180
amphora_id = 6e9fd1a2-1234-4cde-8f00-aabbccddeeff
amphora_udp_driver = keepalived_lvs
agent_tls_protocol = TLSv1.2

[controller_worker]
loadbalancer_topology = ACTIVE_STANDBY
`

func TestParseControllerRendered(t *testing.T) {
	c, unknown, err := Parse(Source{Name: "amphora-agent.conf", Data: []byte(controllerRendered)})
	if err != nil {
		t.Fatal(err)
	}
	if len(unknown) != 0 {
		t.Fatalf("options the controller renders reported unknown: %v", unknown)
	}
	want := Defaults()
	want.ControllerIPPortList = []string{"192.0.2.10:5555", "[2001:db8::10]:5555", "2001:db8::11:5555"}
	want.HeartbeatKey, want.HeartbeatKeySet = "insecure", true
	want.AmphoraID = "6e9fd1a2-1234-4cde-8f00-aabbccddeeff"
	want.LoadBalancerTopology = TopologyActiveStandby
	want.UseSyslog, want.SyslogLogFacility = true, "LOG_LOCAL1"
	if diff := cmp.Diff(want, c); diff != "" {
		t.Fatalf("config (-want +got):\n%s", diff)
	}
	if !c.ActiveStandby() || c.ListenAddr() != "[::]:9443" {
		t.Fatalf("derived values: %v %s", c.ActiveStandby(), c.ListenAddr())
	}
}

func TestParseOptions(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want func(*Config)
	}{
		{"dash and underscore are the same", "[haproxy_amphora]\nbind-port = 9444\nbase-path=/srv/octavia\n",
			func(c *Config) { c.BindPort = 9444; c.BasePath = "/srv/octavia" }},
		{"upper-case option names", "[health_manager]\nHEARTBEAT_INTERVAL = 3\n",
			func(c *Config) { c.HeartbeatInterval = 3 * time.Second }},
		{"empty controller list", "[health_manager]\ncontroller_ip_port_list =\n",
			func(c *Config) { c.ControllerIPPortList = nil }},
		{"list with blanks", "[health_manager]\ncontroller_ip_port_list = a:1 ,, b:2\n",
			func(c *Config) { c.ControllerIPPortList = []string{"a:1", "b:2"} }},
		{"booleans", "[DEFAULT]\ndebug = yes\n", func(c *Config) { c.Debug = true }},
		{"topology is case-insensitive", "[controller_worker]\nloadbalancer_topology = active_standby\n",
			func(c *Config) { c.LoadBalancerTopology = TopologyActiveStandby }},
		{"facilities from haproxy_amphora (controller template) are honoured", "[haproxy_amphora]\nadministrative_log_facility = 4\n",
			func(c *Config) { c.AdministrativeLogFacility = 4 }},
		{"amphora_agent facility wins", "[amphora_agent]\nadministrative_log_facility = 2\n[haproxy_amphora]\nadministrative_log_facility = 4\n",
			func(c *Config) { c.AdministrativeLogFacility = 2 }},
		{"TLS 1.3 accepted", "[amphora_agent]\nagent_tls_protocol = TLSv1.3\n", func(c *Config) { c.AgentTLSProtocol = "TLSv1.3" }},
		{"quoted values", "[amphora_agent]\namphora_id = \"abc\"\n", func(c *Config) { c.AmphoraID = "abc" }},
		{"heartbeat key with hash kept", "[health_manager]\nheartbeat_key = a#b ;c\n",
			func(c *Config) { c.HeartbeatKey = "a#b ;c"; c.HeartbeatKeySet = true }},
		{"own options", "[amphora_agent]\nservice_manager = builtin\nmax_request_body_size = 2048\nnetwork_namespace = lbt-x\n",
			func(c *Config) { c.ServiceManager = "builtin"; c.MaxBodySize = 2048; c.Namespace = "lbt-x" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := Parse(Source{Name: "f", Data: []byte(tc.doc)})
			if err != nil {
				t.Fatal(err)
			}
			want := Defaults()
			tc.want(want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		doc  string
		want string // every part must appear in the message
	}{
		{"[haproxy_amphora]\nbind_port = https\n", `f: [haproxy_amphora] bind_port: "https" is not a port number`},
		{"[haproxy_amphora]\nbind_port = 70000\n", `bind_port: "70000" is not a port number`},
		{"[haproxy_amphora]\nbind_host = amphora.example\n", `[haproxy_amphora] bind_host: "amphora.example" is not an IP address`},
		{"[haproxy_amphora]\nbase_path = relative\n", `[haproxy_amphora] base_path`},
		{"[health_manager]\nheartbeat_interval = 0\n", `f: [health_manager] heartbeat_interval: 0 must be at least 1 second`},
		{"[health_manager]\nheartbeat_interval = soon\n", `heartbeat_interval: "soon" is not a whole number`},
		{"[health_manager]\ncontroller_ip_port_list = 192.0.2.1\n", `controller_ip_port_list: entry "192.0.2.1" is not host:port`},
		{"[health_manager]\ncontroller_ip_port_list = h:port\n", `port "port" is not a number`},
		{"[amphora_agent]\nagent_tls_protocol = TLSv9\n", `agent_tls_protocol: "TLSv9" is not one of`},
		{"[amphora_agent]\nadministrative_log_facility = 9\n", `administrative_log_facility: "9" is not a log facility`},
		{"[controller_worker]\nloadbalancer_topology = TRIPLE\n", `loadbalancer_topology: "TRIPLE"`},
		{"[DEFAULT]\ndebug = maybe\n", `[DEFAULT] debug: "maybe" is not a boolean`},
		{"[amphora_agent]\nservice_manager = upstart\n", `service_manager: "upstart"`},
	}
	for _, tc := range tests {
		_, _, err := Parse(Source{Name: "f", Data: []byte(tc.doc)})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to contain %q", tc.doc, err, tc.want)
		}
		var oe *OptionError
		if err != nil && strings.Contains(tc.want, "[") && !errors.As(err, &oe) {
			t.Errorf("%q: %T is not an *OptionError", tc.doc, err)
		}
	}
}

func TestUnknownOptionsReported(t *testing.T) {
	_, unknown, err := Parse(Source{Name: "f", Data: []byte("[amphora_agent]\nfoo_bar = 1\n[nova]\nx = y\n")})
	if err != nil {
		t.Fatal(err)
	}
	want := []Unknown{{"f", "amphora_agent", "foo_bar"}, {"f", "nova", "x"}}
	if diff := cmp.Diff(want, unknown); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
}

func TestLoadLaterFilesOverride(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.conf"), filepath.Join(dir, "b.conf")
	os.WriteFile(a, []byte("[haproxy_amphora]\nbind_port = 1\nbase_path = /a\n"), 0o600)
	os.WriteFile(b, []byte("[haproxy_amphora]\nbind_port = 2\n"), 0o600)
	c, _, err := Load(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if c.BindPort != 2 || c.BasePath != "/a" || !cmp.Equal(c.Files, []string{a, b}) {
		t.Fatalf("got port %d base %s files %v", c.BindPort, c.BasePath, c.Files)
	}
	if _, _, err := Load(filepath.Join(dir, "missing.conf")); err == nil || !strings.Contains(err.Error(), "missing.conf") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestSplitHostPort(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1:5555":        "192.0.2.1 5555",
		"[2001:db8::1]:5555":    "2001:db8::1 5555",
		"2001:db8::1:5555":      "2001:db8::1 5555",
		" controller.example:1": "controller.example 1",
	} {
		h, p, err := SplitHostPort(in)
		if err != nil || h+" "+strconv.Itoa(p) != want {
			t.Errorf("SplitHostPort(%q) = %q %d %v, want %s", in, h, p, err, want)
		}
	}
	for _, bad := range []string{"", "host", ":5555", "host:", "host:0", "host:99999"} {
		if _, _, err := SplitHostPort(bad); err == nil {
			t.Errorf("SplitHostPort(%q) accepted", bad)
		}
	}
}

func TestStoreWakesWaiters(t *testing.T) {
	s := NewStore(Defaults())
	ch := s.Changed()
	n := s.Current().Clone()
	n.HeartbeatKey = "k"
	s.Update(n)
	select {
	case <-ch:
	default:
		t.Fatal("Changed not closed by Update")
	}
	if s.Current().HeartbeatKey != "k" {
		t.Fatal("Update not visible")
	}
}

func TestWithMutableKeepsImmutable(t *testing.T) {
	cur := Defaults()
	next := Defaults()
	next.BindPort = 1
	next.HeartbeatKey, next.HeartbeatKeySet = "new", true
	next.LoadBalancerTopology = TopologyActiveStandby
	got := cur.WithMutable(next)
	if got.BindPort != 9443 || got.HeartbeatKey != "new" || !got.ActiveStandby() || cur.MutableEqual(got) {
		t.Fatalf("WithMutable: %+v", got)
	}
}

// TestSyslogOptions: the log offloading options are read, validated and
// change at run time.
func TestSyslogOptions(t *testing.T) {
	c, _, err := Parse(Source{Name: "a", Data: []byte("[DEFAULT]\nuse_syslog = true\nsyslog_log_facility = local3\n[amphora_agent]\nsyslog_socket = /run/x/log\n")})
	if err != nil {
		t.Fatal(err)
	}
	if !c.UseSyslog || c.SyslogLogFacility != "local3" || c.SyslogSocket != "/run/x/log" {
		t.Errorf("%v %q %q", c.UseSyslog, c.SyslogLogFacility, c.SyslogSocket)
	}
	if _, _, err := Parse(Source{Name: "a", Data: []byte("[DEFAULT]\nsyslog_log_facility = LOG_LOCAL9\n")}); err == nil ||
		!strings.Contains(err.Error(), "[DEFAULT] syslog_log_facility") {
		t.Errorf("bad facility: %v", err)
	}
	next := c.Clone()
	next.SyslogLogFacility, next.AdministrativeLogFacility = "LOG_LOCAL4", 4
	if c.MutableEqual(next) {
		t.Error("a facility change is not a run-time change")
	}
	if got := c.WithMutable(next); got.SyslogLogFacility != "LOG_LOCAL4" || got.AdministrativeLogFacility != 4 || got.SyslogSocket != "/run/x/log" {
		t.Errorf("WithMutable: %+v", got)
	}
}
