package agent

import (
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/octavia-go/amphora-agent/netns"
)

const (
	vipBody = `{"subnet_cidr":"203.0.113.0/24","gateway":"203.0.113.1","mac_address":"FA:16:3E:00:00:01","mtu":1450,` +
		`"vrrp_ip":"203.0.113.4","host_routes":[]}`
	portBody = `{"mac_address":"fa:16:3e:00:00:02","fixed_ips":[{"ip_address":"198.18.2.11","subnet_cidr":"198.18.2.0/24"}]}`
)

// POST /1.0/plug/vip/<vip> and /1.0/plug/network: the body is validated
// whole before the plumbing is asked; its errors map to the reference's
// answers (409 and the 404 the controller retries included).
func TestPlug(t *testing.T) {
	a := newAPI(t)
	a.net.result = &netns.PlugResult{Interface: "eth1", Details: "VIPs plugged on interface eth1: 203.0.113.10"}
	a.do(http.MethodPost, "/1.0/plug/vip/203.0.113.10", vipBody).json(t, http.StatusAccepted,
		`{"message":"OK","details":"VIPs plugged on interface eth1: 203.0.113.10"}`)
	a.net.result = &netns.PlugResult{Interface: "eth2", Details: "Plugged on interface eth2", Warnings: []string{"route 0.0.0.0/0: exists"}}
	a.do(http.MethodPost, "/1.0/plug/network", portBody).json(t, http.StatusAccepted,
		`{"message":"OK","details":"Plugged on interface eth2","warnings":["route 0.0.0.0/0: exists"]}`)
	if d := cmp.Diff([]string{"plug vip 203.0.113.10 fa:16:3e:00:00:01", "plug network fa:16:3e:00:00:02"}, a.net.called()); d != "" {
		t.Errorf("calls (-want +got):\n%s", d)
	}

	// refused by the request parser: the plumbing is not asked
	for _, tc := range []struct {
		path, body string
		status     int
		answer     string
	}{
		{"/1.0/plug/vip/203.0.113.10", `[]`, http.StatusBadRequest, `{"error":"400 Bad Request: Invalid subnet information","http_code":400}`},
		{"/1.0/plug/vip/203.0.113.10", `{"mac_address":"fa:16:3e:00:00:01"}`, http.StatusBadRequest, `{"error":"400 Bad Request: Invalid subnet information","http_code":400}`},
		{"/1.0/plug/vip/bogus", vipBody, http.StatusBadRequest, `{"message":"Invalid VIP: 'bogus' does not appear to be an IPv4 or IPv6 address"}`},
		{"/1.0/plug/network", `{}`, http.StatusBadRequest, `{"error":"400 Bad Request: Invalid port information","http_code":400}`},
		{"/1.0/plug/network", `{"mac_address":"fa:16:3e:00:00:02","fixed_ips":[{"ip_address":"x","subnet_cidr":"198.18.2.0/24"}]}`,
			http.StatusBadRequest, `{"message":"Invalid network port"}`},
	} {
		a.do(http.MethodPost, tc.path, tc.body).json(t, tc.status, tc.answer)
	}
	if calls := a.net.called(); len(calls) != 0 {
		t.Errorf("refused requests reached the plumbing: %v", calls)
	}

	for _, tc := range []struct {
		err    error
		status int
		answer string
	}{
		{netns.ErrInterfaceExists, http.StatusConflict, `{"message":"Interface already exists"}`},
		{netns.ErrNoInterface, http.StatusNotFound, `{"details":"No suitable network interface found"}`},
		{&netns.PlugError{Message: netns.MsgPlugVIPFailed, Details: "RTNETLINK answers: File exists"}, http.StatusInternalServerError,
			`{"message":"Error plugging VIP","details":"RTNETLINK answers: File exists"}`},
		{errors.New("boom"), http.StatusInternalServerError, internal},
	} {
		a.net.err = tc.err
		a.do(http.MethodPost, "/1.0/plug/vip/203.0.113.10", vipBody).json(t, tc.status, tc.answer)
	}
}

// GET /1.0/interface/<ip> and PUT /1.0/interface/<ip>/rules.
func TestInterface(t *testing.T) {
	a := newAPI(t)
	a.net.iface = "eth1"
	a.do(http.MethodGet, "/1.0/interface/203.0.113.4", "").json(t, http.StatusOK, `{"message":"OK","interface":"eth1"}`)
	a.do(http.MethodPut, "/1.0/interface/203.0.113.4/rules", `[]`).json(t, http.StatusOK, okBodyJSON)
	if d := cmp.Diff([]string{"interface 203.0.113.4", "rules 203.0.113.4 []"}, a.net.called()); d != "" {
		t.Errorf("calls (-want +got):\n%s", d)
	}
	for _, tc := range []struct {
		err    error
		status int
		answer string
	}{
		{&netns.BadRequestError{Message: netns.MsgInvalidIP}, http.StatusBadRequest, `{"message":"Invalid IP address"}`},
		{netns.ErrAddressNotFound, http.StatusNotFound, `{"message":"Error interface not found for IP address"}`},
		{&netns.BadRequestError{Message: netns.MsgInvalidRulesInfo, Generic: true}, http.StatusBadRequest,
			`{"error":"400 Bad Request: Invalid rules information","http_code":400}`},
	} {
		a.net.err = tc.err
		a.do(http.MethodGet, "/1.0/interface/x", "").json(t, tc.status, tc.answer)
		a.do(http.MethodPut, "/1.0/interface/x/rules", `[]`).json(t, tc.status, tc.answer)
	}
}
