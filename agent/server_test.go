package agent

// The REST API as the controller sees it, route by route: status codes,
// exact JSON bodies, content types and ETags (API.md). These tests run
// without root in milliseconds; read them first to learn the API.

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/google/go-cmp/cmp"

	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/certs"
	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// Version discovery, including the controller's "GET //".
func TestRoot(t *testing.T) {
	a := newAPI(t)
	for _, path := range []string{"/", "//"} {
		a.do(http.MethodGet, path, "").json(t, http.StatusOK, `{"api_version":"1.0"}`)
	}
}

// Routing errors get the reference's generic JSON bodies: the controller
// takes a JSON 404 as "not offered here" and a non-JSON one as "agent not
// ready".
func TestRoutingErrors(t *testing.T) {
	a := newAPI(t)
	for _, tc := range []struct {
		method, path string
		status       int
		body         string
		allow        string // 405: the methods of the path (the reference sends none; RFC 9110 wants them)
	}{
		{http.MethodGet, "/1.0/nothing", http.StatusNotFound, notFound, ""},
		{http.MethodGet, "/1.0/info/", http.StatusNotFound, notFound, ""}, // trailing slash
		{http.MethodGet, "/0.5/info", http.StatusNotFound, notFound, ""},
		{http.MethodPost, "/1.0/info", http.StatusMethodNotAllowed, notAllowed, "GET"},
		{http.MethodDelete, "/1.0/config", http.StatusMethodNotAllowed, notAllowed, "PUT"},
		{http.MethodGet, "/1.0/loadbalancer/" + lbID + "/x/y", http.StatusNotFound, notFound, ""},
		// an encoded '/' in an id or a file name is bad input, not a route
		{http.MethodPut, "/1.0/loadbalancer/" + lbID + "/certificates/..%2Fx.pem", http.StatusBadRequest,
			`{"message":"Invalid request","details":"ids and file names must not contain '/'"}`, ""},
		{http.MethodDelete, "/1.0/listeners/..%2F" + lbID, http.StatusBadRequest,
			`{"message":"Invalid request","details":"ids and file names must not contain '/'"}`, ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			ans := a.do(tc.method, tc.path, "")
			ans.json(t, tc.status, tc.body)
			if allow := ans.header.Get("Allow"); allow != tc.allow {
				t.Errorf("Allow header %q, want %q", allow, tc.allow)
			}
		})
	}
	if calls := a.lbs.called(); len(calls) != 0 {
		t.Errorf("routing errors reached the load balancers: %v", calls)
	}
}

// HEAD is answered for every GET route: same status and headers, no body.
func TestHead(t *testing.T) {
	a := newAPI(t)
	a.lbs.configs[lbID] = "global\n"
	a.do(http.MethodHead, "/1.0/info", "").json(t, http.StatusOK, "")
	a.do(http.MethodHead, "/1.0/loadbalancer/"+lbID+"/haproxy", "").is(t, http.StatusOK, "text/plain; charset=UTF-8", "", md5hex("global\n"))
	a.do(http.MethodHead, "/1.0/nothing", "").json(t, http.StatusNotFound, "")
}

// A panic in a handler is the generic 500, and the server goes on.
func TestPanicIsInternalError(t *testing.T) {
	a := newAPI(t)
	a.Server.engine.GET("/1.0/boom", func(*gin.Context) { panic("boom") })
	a.do(http.MethodGet, "/1.0/boom", "").json(t, http.StatusInternalServerError, internal)
	a.do(http.MethodGet, "/", "").json(t, http.StatusOK, `{"api_version":"1.0"}`)
}

func TestInfo(t *testing.T) {
	a := newAPI(t)
	host, _ := os.Hostname()
	// ipvsadm is not installed: null rather than the reference's 500 (F1)
	a.do(http.MethodGet, "/1.0/info", "").json(t, http.StatusOK,
		`{"hostname":"`+host+`","haproxy_version":"2.6.12-1+deb12u1","api_version":"1.0","keepalived_version":"1:2.2.7-1+b2","ipvsadm_version":null}`)
}

// /1.0/details keeps the reference's keys, order and value types (cpu
// fields and load as strings, swap_used = SwapCached, topology always
// SINGLE); listeners are the union of haproxy's and the LVS listeners.
func TestDetails(t *testing.T) {
	a := newAPI(t)
	host, _ := os.Hostname()
	a.lbs.listeners = []haproxy.ListenerStatus{{Status: "ACTIVE", UUID: lisID, Type: "HTTP"}}
	a.lbs.running = []string{lbID}
	a.lvs.configs[lvsID] = "x"
	a.lvs.running = 1
	a.do(http.MethodGet, "/1.0/details", "").json(t, http.StatusOK, `{"hostname":"`+host+`",`+
		`"haproxy_version":"2.6.12-1+deb12u1","api_version":"1.0","networks":{"eth1":{"network_tx":10,"network_rx":20}},`+
		`"active":true,"haproxy_count":1,"cpu_count":2,"cpu":{"total":342,"user":"10","system":"20","soft_irq":"7"},`+
		`"memory":{"total":2048,"free":1024,"buffers":8,"cached":16,"swap_used":1,"shared":2,"slab":4},`+
		`"disk":{"used":100,"available":200},"load":["0.42","0.41","0.21"],"active_tuned_profiles":"amphora",`+
		`"topology":"SINGLE","topology_status":"OK","listeners":["`+lvsID+`","`+lisID+`"],"packages":{},`+
		`"lvs_listener_process_count":1,"keepalived_version":"1:2.2.7-1+b2","ipvsadm_version":null}`)

	a.Host = fakeHost{err: errors.New("no /proc")}
	a.do(http.MethodGet, "/1.0/details", "").json(t, http.StatusInternalServerError, internal)
}

// PUT /1.0/config rewrites the --config-file and applies the run-time
// options at once; a document the agent could not start with is refused
// and the file kept.
func TestPutConfig(t *testing.T) {
	a := newAPI(t)
	pki, err := testutil.NewPKI(filepath.Join(t.TempDir(), "pki"), ampID)
	if err != nil {
		t.Fatal(err)
	}
	tls := "agent_server_cert = " + pki.ServerPEM + "\nagent_server_ca = " + pki.ClientCA + "\n"
	doc := "[amphora_agent]\namphora_id = " + ampID + "\n" + tls + "[health_manager]\nheartbeat_key = k2\nheartbeat_interval = 3\n" +
		"controller_ip_port_list = 192.0.2.9:5555\n[controller_worker]\nloadbalancer_topology = ACTIVE_STANDBY\n"
	// the test agent runs with a 1024-byte body limit, an option of its
	// own that the upload does not set: it is kept
	a.do(http.MethodPut, "/1.0/config", doc).json(t, http.StatusAccepted,
		`{"message":"OK","details":"Changed options that take effect at the next agent start: [amphora_agent] agent_server_ca, [amphora_agent] agent_server_cert. `+
			`Kept from the running configuration: [amphora_agent] max_request_body_size."}`)
	stored := strings.Replace(doc, "[amphora_agent]\n", "[amphora_agent]\n"+
		"# Kept from the running configuration by amphora-agent (options of this agent the controller does not render)\n"+
		"max_request_body_size = 1024\n", 1)
	if got, _ := os.ReadFile(a.conf); string(got) != stored {
		t.Errorf("config file %q", got)
	}
	cur := a.Config.Current()
	if cur.HeartbeatKey != "k2" || cur.HeartbeatInterval.Seconds() != 3 || !cur.ActiveStandby() ||
		strings.Join(cur.ControllerIPPortList, ",") != "192.0.2.9:5555" {
		t.Errorf("run-time options not applied: %+v", cur)
	}

	a.do(http.MethodPut, "/1.0/config", "[haproxy_amphora]\nbind_port = https\n").json(t, http.StatusBadRequest,
		`{"message":"Invalid agent configuration","details":"uploaded configuration: [haproxy_amphora] bind_port: \"https\" is not a port number (0-65535)"}`)
	if got, _ := os.ReadFile(a.conf); string(got) != stored {
		t.Errorf("refused upload changed the file: %q", got)
	}
	a.do(http.MethodPut, "/1.0/config", strings.Repeat("#", 2000)).json(t, http.StatusBadRequest,
		`{"message":"Request body too large","details":"the limit for this request is 1024 bytes ([amphora_agent] max_request_body_size caps every upload)"}`)

	// started without --config-file: nothing to rewrite
	cfg := a.Config.Current().Clone()
	cfg.Files = nil
	a.Config.Update(cfg)
	a.do(http.MethodPut, "/1.0/config", doc).json(t, http.StatusInternalServerError,
		`{"message":"Unable to update amphora-agent configuration.","details":"the agent was started without --config-file"}`)
}

// PUT /1.0/config refuses what the agent could not start with (issue 13,
// defect 8: a document with only [DEFAULT] was accepted, heartbeats
// stopped and the next start failed; these cases failed before): the
// options the agent needs, server certificate and CA that load, a bind
// address it can listen on. The file on disk is kept.
func TestPutConfigRefusesUnstartable(t *testing.T) {
	a := newAPI(t)
	dir := t.TempDir()
	pki, err := testutil.NewPKI(filepath.Join(dir, "pki"), ampID)
	if err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	running := a.Config.Current().Clone()
	running.ControllerIPPortList = []string{"192.0.2.9:5555"} // it heartbeats
	a.Config.Update(running)
	before, _ := os.ReadFile(a.conf)
	render := func(edit map[string]string) string {
		opts := []struct{ sec, key, val string }{
			{"DEFAULT", "debug", "False"},
			{"haproxy_amphora", "bind_host", "::"},
			{"haproxy_amphora", "bind_port", "9443"},
			{"health_manager", "controller_ip_port_list", "192.0.2.9:5555"},
			{"health_manager", "heartbeat_key", "k"},
			{"amphora_agent", "agent_server_ca", pki.ClientCA},
			{"amphora_agent", "agent_server_cert", pki.ServerPEM},
			{"amphora_agent", "amphora_id", ampID},
		}
		var b strings.Builder
		sec := ""
		for _, o := range opts {
			if o.sec != sec {
				b.WriteString("[" + o.sec + "]\n")
				sec = o.sec
			}
			v, edited := edit[o.sec+"/"+o.key]
			switch {
			case !edited:
				v = o.val
			case v == "-":
				continue
			}
			b.WriteString(o.key + " = " + v + "\n")
		}
		return b.String()
	}
	for _, c := range []struct {
		name    string
		doc     string
		details string
	}{
		{"only DEFAULT", "[DEFAULT]\ndebug = True\n", "[amphora_agent] amphora_id: is required (the agent would stop heartbeating)"},
		{"no heartbeat key", render(map[string]string{"health_manager/heartbeat_key": "-"}), "[health_manager] heartbeat_key: is required (the agent would stop heartbeating)"},
		{"no controllers", render(map[string]string{"health_manager/controller_ip_port_list": ""}), "[health_manager] controller_ip_port_list: is required (the agent would stop heartbeating)"},
		{"missing certificate", render(map[string]string{"amphora_agent/agent_server_cert": filepath.Join(dir, "absent.pem")}),
			"[amphora_agent] agent_server_cert: open " + filepath.Join(dir, "absent.pem") + ": no such file or directory"},
		{"certificate without key", render(map[string]string{"amphora_agent/agent_server_cert": pki.ClientCA}),
			"[amphora_agent] agent_server_cert: " + pki.ClientCA + ": not a valid certificate and private key pair: tls: found a certificate rather than a key in the PEM for the private key"},
		{"garbage CA", render(map[string]string{"amphora_agent/agent_server_ca": garbage}),
			"[amphora_agent] agent_server_ca: " + garbage + ": no CA certificate found"},
		{"address not on this host", render(map[string]string{"haproxy_amphora/bind_host": "203.0.113.7"}),
			"[haproxy_amphora] bind_host/bind_port: cannot listen on 203.0.113.7:9443: bind: cannot assign requested address"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a.do(http.MethodPut, "/1.0/config", c.doc).json(t, http.StatusBadRequest,
				`{"message":"Invalid agent configuration","details":`+strconv.Quote(c.details)+`}`)
			if got, _ := os.ReadFile(a.conf); string(got) != string(before) {
				t.Errorf("refused upload changed the file: %q", got)
			}
		})
	}
	// a port another program holds
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	a.do(http.MethodPut, "/1.0/config", render(map[string]string{"haproxy_amphora/bind_host": "127.0.0.1", "haproxy_amphora/bind_port": port})).json(t, http.StatusBadRequest,
		`{"message":"Invalid agent configuration","details":"[haproxy_amphora] bind_host/bind_port: cannot listen on 127.0.0.1:`+port+`: bind: address already in use"}`)

	// the same document with usable values is taken; the answer names
	// what waits for a restart
	a.do(http.MethodPut, "/1.0/config", render(map[string]string{"haproxy_amphora/bind_host": "127.0.0.1", "haproxy_amphora/bind_port": "0"})).json(t, http.StatusAccepted,
		`{"message":"OK","details":"Changed options that take effect at the next agent start: [haproxy_amphora] bind_host, [haproxy_amphora] bind_port, `+
			`[amphora_agent] agent_server_ca, [amphora_agent] agent_server_cert. Kept from the running configuration: [amphora_agent] max_request_body_size."}`)
}

// The merge rule: the agent's own options, which the controller's
// rendering never has, are kept from the running configuration when the
// upload does not set them; an option the upload sets wins (issue 13,
// defect 8: they were dropped before).
func TestPutConfigKeepsOwnOptions(t *testing.T) {
	a := newAPI(t)
	pki, err := testutil.NewPKI(filepath.Join(t.TempDir(), "pki"), ampID)
	if err != nil {
		t.Fatal(err)
	}
	cfg := a.Config.Current().Clone()
	cfg.ServiceManager, cfg.Namespace, cfg.PCIRescanPath = "builtin", "amp-test-ns", ""
	cfg.AgentServerCert, cfg.AgentServerCA = pki.ServerPEM, pki.ClientCA
	a.Config.Update(cfg)
	upload := "[DEFAULT]\ndebug = True\n\n[health_manager]\ncontroller_ip_port_list = 192.0.2.9:5555\nheartbeat_key = k\n\n" +
		"[amphora_agent]\nagent_server_ca = " + pki.ClientCA + "\nagent_server_cert = " + pki.ServerPEM + "\namphora_id = " + ampID +
		"\nnetwork_namespace = amp-other-ns\n\n[controller_worker]\nloadbalancer_topology = SINGLE\n"
	a.do(http.MethodPut, "/1.0/config", upload).json(t, http.StatusAccepted,
		`{"message":"OK","details":"Changed options that take effect at the next agent start: [DEFAULT] debug, [amphora_agent] network_namespace. `+
			`Kept from the running configuration: [amphora_agent] max_request_body_size, [amphora_agent] service_manager, [amphora_agent] pci_rescan_path."}`)
	got, _ := os.ReadFile(a.conf)
	want := strings.Replace(upload, "[amphora_agent]\n", "[amphora_agent]\n"+
		"# Kept from the running configuration by amphora-agent (options of this agent the controller does not render)\n"+
		"max_request_body_size = 1024\nservice_manager = builtin\npci_rescan_path = \n", 1)
	if string(got) != want {
		t.Errorf("stored configuration (-want +got):\n%s", cmp.Diff(want, string(got)))
	}
	next, _, err := config.Load(a.conf)
	if err != nil {
		t.Fatal(err)
	}
	if next.ServiceManager != "builtin" || next.PCIRescanPath != "" || next.Namespace != "amp-other-ns" {
		t.Errorf("the next start reads service_manager %q, pci_rescan_path %q, network_namespace %q",
			next.ServiceManager, next.PCIRescanPath, next.Namespace)
	}
}

// PUT /1.0/certificate takes a certificate with its key only.
func TestPutServerCertificate(t *testing.T) {
	a := newAPI(t)
	a.do(http.MethodPut, "/1.0/certificate", "PEM").json(t, http.StatusAccepted, okBodyJSON)
	if d := a.certs.called(); len(d) != 1 || d[0] != `replace "PEM"` {
		t.Errorf("calls %v", d)
	}
	a.certs.err = fmt.Errorf("%w: private key does not match", certs.ErrInvalidKeyPair)
	a.do(http.MethodPut, "/1.0/certificate", "PEM").json(t, http.StatusBadRequest,
		`{"message":"Invalid certificate","details":"not a valid certificate and private key pair: private key does not match"}`)
	a.certs.err = errors.New("disk full")
	a.do(http.MethodPut, "/1.0/certificate", "PEM").json(t, http.StatusInternalServerError, internal)
	a.do(http.MethodPut, "/1.0/certificate", strings.Repeat("x", 1025)).json(t, http.StatusBadRequest,
		`{"message":"Request body too large","details":"the limit for this request is 1024 bytes ([amphora_agent] max_request_body_size caps every upload)"}`)
}
