package agent

// The REST API as the controller sees it, route by route: status codes,
// exact JSON bodies, content types and ETags (API.md). These tests run
// without root in milliseconds; read them first to learn the API.

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/octavia-go/amphora-agent/certs"
	"github.com/octavia-go/amphora-agent/haproxy"
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
	doc := "[amphora_agent]\namphora_id = " + ampID + "\n[health_manager]\nheartbeat_key = k2\nheartbeat_interval = 3\n" +
		"controller_ip_port_list = 192.0.2.9:5555\n[controller_worker]\nloadbalancer_topology = ACTIVE_STANDBY\n"
	a.do(http.MethodPut, "/1.0/config", doc).json(t, http.StatusAccepted, okBodyJSON)
	if got, _ := os.ReadFile(a.conf); string(got) != doc {
		t.Errorf("config file %q", got)
	}
	cur := a.Config.Current()
	if cur.HeartbeatKey != "k2" || cur.HeartbeatInterval.Seconds() != 3 || !cur.ActiveStandby() ||
		strings.Join(cur.ControllerIPPortList, ",") != "192.0.2.9:5555" {
		t.Errorf("run-time options not applied: %+v", cur)
	}

	a.do(http.MethodPut, "/1.0/config", "[haproxy_amphora]\nbind_port = https\n").json(t, http.StatusBadRequest,
		`{"message":"Invalid agent configuration","details":"uploaded configuration: [haproxy_amphora] bind_port: \"https\" is not a port number (0-65535)"}`)
	if got, _ := os.ReadFile(a.conf); string(got) != doc {
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
