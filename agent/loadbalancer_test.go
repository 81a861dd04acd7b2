package agent

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/keepalived"
	"github.com/octavia-go/amphora-agent/service"
)

// failed is a service manager failure as haproxy and keepalived report
// it: the reference's message, the cause as details.
func failed(msg string) error {
	return &service.ActionError{Message: msg, Err: &service.OpError{Name: "haproxy-" + lbID, Op: "start", Result: "failed"}}
}

// PUT /1.0/loadbalancer/<amphora>/<lb>/haproxy: 202 with the body's MD5
// as ETag; a configuration haproxy refuses is a 400 with its output.
func TestPutHAProxyConfig(t *testing.T) {
	a := newAPI(t)
	path := "/1.0/loadbalancer/" + ampID + "/" + lbID + "/haproxy"
	cfg := "global\n    daemon\n"
	a.do(http.MethodPut, path, cfg).is(t, http.StatusAccepted, "application/json", okBodyJSON, md5hex(cfg))
	if d := cmp.Diff([]string{`upload ` + ampID + ` ` + lbID + ` "global\n    daemon\n"`}, a.lbs.called()); d != "" {
		t.Errorf("calls (-want +got):\n%s", d)
	}

	a.lbs.err = &haproxy.ValidationError{Output: "[ALERT] parsing [haproxy.cfg:2]: unknown keyword 'bogus'\n"}
	a.do(http.MethodPut, path, cfg).is(t, http.StatusBadRequest, "application/json",
		`{"message":"Invalid request","details":"[ALERT] parsing [haproxy.cfg:2]: unknown keyword 'bogus'\n"}`, "-")
	a.lbs.err = failed("Error enabling haproxy service")
	a.do(http.MethodPut, path, cfg).json(t, http.StatusInternalServerError,
		`{"message":"Error enabling haproxy service","details":"start haproxy-`+lbID+`: failed"}`)
	a.lbs.err = errors.New("disk full")
	a.do(http.MethodPut, path, cfg).json(t, http.StatusInternalServerError, internal)

	// refused before the load balancers are asked
	a.lbs.err = nil
	a.lbs.called()
	a.do(http.MethodPut, "/1.0/loadbalancer/"+ampID+"/not-a-uuid/haproxy", cfg).json(t, http.StatusBadRequest, badIDs)
	a.do(http.MethodPut, "/1.0/loadbalancer/amp_1/"+lbID+"/haproxy", cfg).json(t, http.StatusBadRequest, badIDs)
	a.do(http.MethodPut, path, strings.Repeat("#", 1025)).json(t, http.StatusBadRequest,
		`{"message":"Request body too large","details":"the limit for this request is 1024 bytes ([amphora_agent] max_request_body_size caps every upload)"}`)
	if calls := a.lbs.called(); len(calls) != 0 {
		t.Errorf("refused uploads reached the load balancers: %v", calls)
	}
}

// GET /1.0/loadbalancer/<lb>/haproxy: the stored text with its MD5.
func TestGetHAProxyConfig(t *testing.T) {
	a := newAPI(t)
	a.lbs.configs[lbID] = "global\n    daemon\n"
	a.do(http.MethodGet, "/1.0/loadbalancer/"+lbID+"/haproxy", "").
		is(t, http.StatusOK, "text/plain; charset=UTF-8", "global\n    daemon\n", md5hex("global\n    daemon\n"))
	other := strings.Replace(lbID, "1", "2", 1)
	a.do(http.MethodGet, "/1.0/loadbalancer/"+other+"/haproxy", "").json(t, http.StatusNotFound,
		`{"message":"Loadbalancer Not Found","details":"No loadbalancer with UUID: `+other+`"}`)
	a.do(http.MethodGet, "/1.0/loadbalancer/x/haproxy", "").json(t, http.StatusBadRequest, badIDs)
	a.do(http.MethodGet, "/1.0/loadbalancer/"+lbID+"/other", "").json(t, http.StatusNotFound, notFound)
}

// PUT /1.0/loadbalancer/<id>/<action>: haproxy's when a load balancer
// has this id, else an LVS listener's when one has it, else haproxy's
// (which answers 404).
func TestLoadBalancerActions(t *testing.T) {
	a := newAPI(t)
	a.lbs.configs[lbID] = "global\n"
	path := "/1.0/loadbalancer/" + lbID + "/"

	a.lbs.details = "Configuration file is valid\nhaproxy daemon for " + lbID + " started"
	a.do(http.MethodPut, path+"start", "").json(t, http.StatusAccepted,
		`{"message":"OK","details":"Configuration file is valid\nhaproxy daemon for `+lbID+` started"}`)
	a.lbs.details = "Listener " + lbID + " stoped"
	a.do(http.MethodPut, path+"STOP", "").json(t, http.StatusAccepted, `{"message":"OK","details":"Listener `+lbID+` stoped"}`)
	if d := cmp.Diff([]string{"action " + lbID + " start", "action " + lbID + " STOP"}, a.lbs.called()); d != "" {
		t.Errorf("calls (-want +got):\n%s", d)
	}

	for _, tc := range []struct {
		err    error
		status int
		body   string
	}{
		{haproxy.ErrUnknownAction, http.StatusBadRequest, `{"message":"Invalid Request","details":"Unknown action: restart"}`},
		{haproxy.ErrBadID, http.StatusBadRequest, badIDs},
		{haproxy.ErrNotFound, http.StatusNotFound, `{"message":"Loadbalancer Not Found","details":"No loadbalancer with UUID: ` + lbID + `"}`},
		{failed("Error reloading haproxy"), http.StatusInternalServerError, `{"message":"Error reloading haproxy","details":"start haproxy-` + lbID + `: failed"}`},
		{errors.New("boom"), http.StatusInternalServerError, internal},
	} {
		a.lbs.err = tc.err
		a.do(http.MethodPut, path+"restart", "").json(t, tc.status, tc.body)
	}

	// an LVS listener's id: its keepalived
	a.lvs.configs[lvsID] = "x"
	lvsPath := "/1.0/loadbalancer/" + lvsID + "/"
	a.lvs.details = "keepalivedlvs listener " + lvsID + " restarted"
	a.do(http.MethodPut, lvsPath+"reload", "").json(t, http.StatusAccepted,
		`{"message":"OK","details":"keepalivedlvs listener `+lvsID+` restarted"}`)
	if got := a.lvs.called(); len(got) != 1 || got[0] != "action "+lvsID+" reload" {
		t.Errorf("LVS calls %v", got)
	}
	for _, tc := range []struct {
		err    error
		status int
		body   string
	}{
		{keepalived.ErrUnknownAction, http.StatusBadRequest, `{"message":"Invalid Request","details":"Unknown action: restart"}`},
		{keepalived.ErrListenerNotFound, http.StatusNotFound, `{"message":"UDP Listener Not Found","details":"No UDP listener with UUID: ` + lvsID + `"}`},
		{&service.ActionError{Message: "Failed to restart keepalivedlvs listener " + lvsID, Err: errors.New("exit status 1")},
			http.StatusInternalServerError, `{"message":"Failed to restart keepalivedlvs listener ` + lvsID + `","details":"exit status 1"}`},
	} {
		a.lvs.err = tc.err
		a.do(http.MethodPut, lvsPath+"RESTART", "").json(t, tc.status, tc.body)
	}
	// a load balancer's configuration wins over an LVS one of the same id
	a.lvs.configs[lbID] = "x"
	a.lbs.err, a.lbs.details = nil, "Listener "+lbID+" reloaded"
	a.do(http.MethodPut, path+"reload", "").json(t, http.StatusAccepted, `{"message":"OK","details":"Listener `+lbID+` reloaded"}`)
}

// DELETE /1.0/listeners/<id>: idempotent, dispatched like the actions.
func TestDeleteListener(t *testing.T) {
	a := newAPI(t)
	a.do(http.MethodDelete, "/1.0/listeners/"+lbID, "").json(t, http.StatusOK, okBodyJSON)
	a.lbs.err = haproxy.ErrBadID
	a.do(http.MethodDelete, "/1.0/listeners/x", "").json(t, http.StatusBadRequest, badIDs)
	a.lbs.err = failed("Error stopping haproxy")
	a.do(http.MethodDelete, "/1.0/listeners/"+lbID, "").json(t, http.StatusInternalServerError,
		`{"message":"Error stopping haproxy","details":"start haproxy-`+lbID+`: failed"}`)
	if got := a.lbs.called(); len(got) != 3 {
		t.Errorf("calls %v", got)
	}

	a.lvs.configs[lvsID] = "x"
	a.do(http.MethodDelete, "/1.0/listeners/"+lvsID, "").json(t, http.StatusOK, okBodyJSON)
	a.lvs.err = &service.ActionError{Message: "Error stopping keepalivedlvs", Err: errors.New("exit status 1")}
	a.do(http.MethodDelete, "/1.0/listeners/"+lvsID, "").json(t, http.StatusInternalServerError,
		`{"message":"Error stopping keepalivedlvs","details":"exit status 1"}`)
	if got := a.lvs.called(); len(got) != 2 || got[0] != "delete "+lvsID {
		t.Errorf("LVS calls %v", got)
	}
}

// GET /1.0/listeners: haproxy's frontends, then the LVS listeners with
// their real protocol; an empty list is [].
func TestListListeners(t *testing.T) {
	a := newAPI(t)
	a.do(http.MethodGet, "/1.0/listeners", "").json(t, http.StatusOK, `[]`)
	a.lbs.listeners = []haproxy.ListenerStatus{{Status: "ACTIVE", UUID: lisID, Type: "TERMINATED_HTTPS"}}
	a.lvs.listeners = []keepalived.LVSListenerStatus{{Status: "OFFLINE", UUID: lvsID, Type: "SCTP"}}
	a.do(http.MethodGet, "/1.0/listeners", "").json(t, http.StatusOK,
		`[{"status":"ACTIVE","uuid":"`+lisID+`","type":"TERMINATED_HTTPS"},{"status":"OFFLINE","uuid":"`+lvsID+`","type":"SCTP"}]`)
}

// The certificates of a load balancer: PUT answers 200 (not 202) with the
// MD5 as ETag, GET the MD5 in the body and the ETag, DELETE 200 always.
func TestLoadBalancerCertificates(t *testing.T) {
	a := newAPI(t)
	path := "/1.0/loadbalancer/" + lbID + "/certificates/cert.pem"
	a.do(http.MethodPut, path, "PEM").is(t, http.StatusOK, "application/json", okBodyJSON, md5hex("PEM"))
	a.lbs.certMD5 = md5hex("PEM")
	a.do(http.MethodGet, path, "").is(t, http.StatusOK, "application/json", `{"md5sum":"`+md5hex("PEM")+`"}`, md5hex("PEM"))
	a.do(http.MethodDelete, path, "").json(t, http.StatusOK, okBodyJSON)
	if d := cmp.Diff([]string{
		`put cert ` + lbID + ` cert.pem "PEM" limit 1024`,
		"cert md5 " + lbID + " cert.pem",
		"delete cert " + lbID + " cert.pem",
	}, a.lbs.called()); d != "" {
		t.Errorf("calls (-want +got):\n%s", d)
	}

	for _, tc := range []struct {
		err    error
		status int
		body   string
	}{
		{haproxy.ErrBadFilename, http.StatusBadRequest, `{"message":"Filename has wrong format"}`},
		{haproxy.ErrBadID, http.StatusBadRequest, badIDs},
		{haproxy.ErrCertNotFound, http.StatusNotFound, `{"message":"Certificate Not Found","details":"No certificate with filename: cert.pem"}`},
		{errors.New("disk full"), http.StatusInternalServerError, internal},
	} {
		a.lbs.err = tc.err
		for _, method := range []string{http.MethodPut, http.MethodGet, http.MethodDelete} {
			a.do(method, path, "PEM").json(t, tc.status, tc.body)
		}
	}
	a.lbs.err = fsutil.ErrTooLarge
	a.do(http.MethodPut, path, "PEM").json(t, http.StatusBadRequest,
		`{"message":"Request body too large","details":"the limit for this request is 1024 bytes ([amphora_agent] max_request_body_size caps every upload)"}`)
}

// The UDP/SCTP listener configuration: PUT answers 200 with the MD5 as
// ETag, GET the text without ETag.
func TestLVSConfig(t *testing.T) {
	a := newAPI(t)
	path := "/1.0/listeners/" + ampID + "/" + lvsID + "/udp_listener"
	a.do(http.MethodPut, path, "conf").is(t, http.StatusOK, "application/json", okBodyJSON, md5hex("conf"))
	a.lvs.err = &keepalived.ValidationError{Output: "(Line 3) Unknown keyword 'bogus'"}
	a.do(http.MethodPut, path, "conf").json(t, http.StatusBadRequest, `{"message":"Invalid request","details":"(Line 3) Unknown keyword 'bogus'"}`)
	a.lvs.err = &service.ActionError{Message: "Error enabling octavia-keepalivedlvs service", Err: errors.New("exit status 1")}
	a.do(http.MethodPut, path, "conf").json(t, http.StatusInternalServerError,
		`{"message":"Error enabling octavia-keepalivedlvs service","details":"exit status 1"}`)
	a.do(http.MethodPut, "/1.0/listeners/"+ampID+"/x/udp_listener", "conf").json(t, http.StatusBadRequest, badIDs)

	a.lvs.configs[lvsID] = "conf\n"
	a.do(http.MethodGet, "/1.0/listeners/"+lvsID+"/udp_listener", "").is(t, http.StatusOK, "text/plain; charset=UTF-8", "conf\n", "-")
	other := strings.Replace(lvsID, "1", "2", 1)
	a.do(http.MethodGet, "/1.0/listeners/"+other+"/udp_listener", "").json(t, http.StatusNotFound,
		`{"message":"UDP Listener Not Found","details":"No UDP listener with UUID: `+other+`"}`)
	a.do(http.MethodGet, "/1.0/listeners/x/udp_listener", "").json(t, http.StatusBadRequest, badIDs)
}

// PUT /1.0/vrrp/upload answers 200 with the MD5 as ETag; the actions 202
// with the reference's detail.
func TestVRRP(t *testing.T) {
	a := newAPI(t)
	a.do(http.MethodPut, "/1.0/vrrp/upload", "vrrp").is(t, http.StatusOK, "application/json", okBodyJSON, md5hex("vrrp"))
	a.vrrp.err = &keepalived.ValidationError{Output: "(Line 1) Unknown keyword 'bogus'"}
	a.do(http.MethodPut, "/1.0/vrrp/upload", "vrrp").json(t, http.StatusBadRequest,
		`{"message":"Invalid request","details":"(Line 1) Unknown keyword 'bogus'"}`)
	a.vrrp.err = &service.ActionError{Message: "Error enabling octavia-keepalived service", Err: errors.New("exit status 1")}
	a.do(http.MethodPut, "/1.0/vrrp/upload", "vrrp").json(t, http.StatusInternalServerError,
		`{"message":"Error enabling octavia-keepalived service","details":"exit status 1"}`)

	a.vrrp.err, a.vrrp.details = nil, "keepalived stoped"
	a.do(http.MethodPut, "/1.0/vrrp/stop", "").json(t, http.StatusAccepted, `{"message":"OK","details":"keepalived stoped"}`)
	a.vrrp.err = keepalived.ErrUnknownAction
	a.do(http.MethodPut, "/1.0/vrrp/Restart", "").json(t, http.StatusBadRequest, `{"message":"Invalid Request","details":"Unknown action: restart"}`)
	a.vrrp.err = &service.ActionError{Message: "Failed to start octavia-keepalived service", Err: keepalived.ErrNotConfigured}
	a.do(http.MethodPut, "/1.0/vrrp/start", "").json(t, http.StatusInternalServerError,
		`{"message":"Failed to start octavia-keepalived service","details":"no keepalived configuration has been uploaded (PUT /1.0/vrrp/upload)"}`)
	if d := cmp.Diff([]string{`upload "vrrp"`, `upload "vrrp"`, `upload "vrrp"`, "action stop", "action Restart", "action start"}, a.vrrp.called()); d != "" {
		t.Errorf("calls (-want +got):\n%s", d)
	}
}
