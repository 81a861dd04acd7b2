package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// Call is one call of the controller's REST client.
func Call(name string, args ...any) testutil.OctaviaCall {
	return testutil.OctaviaCall{Call: name, Args: args}
}

// OctaviaOK runs calls and fails unless every one succeeded; with
// wantStatus != 0, each result must be a response with that status.
func (a *Amphora) OctaviaOK(ctx context.Context, wantStatus int, calls ...testutil.OctaviaCall) ([]json.RawMessage, error) {
	res, err := a.Octavia(ctx, calls...)
	if err != nil {
		return nil, err
	}
	if len(res) != len(calls) {
		return nil, fmt.Errorf("octavia client: %d results for %d calls", len(res), len(calls))
	}
	out := make([]json.RawMessage, len(res))
	for i, r := range res {
		if !r.OK {
			return nil, fmt.Errorf("%s: %s: %s", calls[i].Call, r.Error, r.Message)
		}
		if wantStatus != 0 {
			var resp struct {
				StatusCode int `json:"status_code"`
			}
			if err := json.Unmarshal(r.Result, &resp); err != nil || resp.StatusCode != wantStatus {
				return nil, fmt.Errorf("%s: %s, want status %d", calls[i].Call, r.Result, wantStatus)
			}
		}
		out[i] = r.Result
	}
	return out, nil
}

// VIPNetInfo is the net_info of plug_vip for amphora i on the lab's VIP
// network, as the controller builds it from Neutron's subnet and port.
func VIPNetInfo(i int, mac string) map[string]any {
	return map[string]any{
		"subnet_cidr": VIPCIDR, "gateway": VIPGateway, "mac_address": mac, "vrrp_ip": AmphoraVRRPIP(i),
		"mtu": 1500, "host_routes": []any{}, "additional_vips": []any{}, "is_sriov": false,
	}
}

// MemberPortInfo is plug_network's port for amphora i on the member
// network.
func MemberPortInfo(i int, mac string) map[string]any {
	return map[string]any{
		"mac_address": mac, "mtu": 1500, "is_sriov": false,
		"fixed_ips": []any{map[string]any{
			"ip_address": AmphoraMemberIP(i), "subnet_cidr": MemberCIDR, "gateway": nil, "host_routes": []any{},
		}},
	}
}

// PlugPorts hot-plugs the VIP port and a member port into the guest as
// Nova does, then plugs them through the agent as the controller does
// (the agent finds each NIC by MAC; the controller's client retries its
// 404 until the guest has seen the device).
func (a *Amphora) PlugPorts(ctx context.Context) (vipMAC, memMAC string, err error) {
	vipMAC, memMAC = testutil.NeutronMAC(), testutil.NeutronMAC()
	if err := a.HotplugPort(ctx, "vip", vipMAC); err != nil {
		return "", "", err
	}
	if err := a.HotplugPort(ctx, "mem", memMAC); err != nil {
		return "", "", err
	}
	_, err = a.OctaviaOK(ctx, http.StatusAccepted,
		Call("plug_vip", VIP, VIPNetInfo(a.Index, vipMAC)),
		Call("plug_network", MemberPortInfo(a.Index, memMAC)))
	return vipMAC, memMAC, err
}

// HTTPLoadBalancer is an HTTP listener on the VIP, port 80, with both
// lab members in its pool (Octavia's HTTP health monitor: GET
// /index.html every second, expecting 418), and a PROMETHEUS listener on
// port 9100 (the tenants' metrics, served through the agent's
// Prometheus proxy).
type HTTPLoadBalancer struct {
	LBID, ListenerID, PoolID string
	MemberIDs                []string
	PromListenerID           string
}

// NewHTTPLoadBalancer returns fresh ids for one.
func NewHTTPLoadBalancer() HTTPLoadBalancer {
	return HTTPLoadBalancer{
		LBID: testutil.NewUUID(), ListenerID: testutil.NewUUID(), PoolID: testutil.NewUUID(),
		MemberIDs:      []string{testutil.NewUUID(), testutil.NewUUID()},
		PromListenerID: testutil.NewUUID(),
	}
}

const (
	// LBPort is the HTTP listener's port.
	LBPort = 80
	// PromPort is the PROMETHEUS listener's port.
	PromPort = 9100
)

// Render renders its haproxy configuration for amp with the controller's
// combined-listeners templater.
func (lb HTTPLoadBalancer) Render(ctx context.Context, amp *Amphora) (string, error) {
	members := make([]testutil.RenderMember, len(lb.MemberIDs))
	for i, id := range lb.MemberIDs {
		members[i] = testutil.RenderMember{ID: id, Address: MemberIPs[i], Port: HTTPPort}
	}
	spec := testutil.RenderSpec{
		AmphoraID: amp.ID, LBID: lb.LBID, BasePath: "/var/lib/octavia", CertDir: "/var/lib/octavia/certs",
		VIP: VIP, Topology: amp.Topology,
		Listeners: []testutil.RenderListener{
			{ID: lb.ListenerID, Protocol: "HTTP", Port: LBPort, PoolID: lb.PoolID, Members: members},
			{ID: lb.PromListenerID, Protocol: "PROMETHEUS", Port: PromPort},
		},
	}
	return testutil.RenderHAProxy(ctx, spec)
}

// Deploy uploads the rendered configuration and starts it.
func (lb HTTPLoadBalancer) Deploy(ctx context.Context, amp *Amphora, config string) error {
	_, err := amp.OctaviaOK(ctx, http.StatusAccepted,
		Call("upload_config", lb.LBID, config),
		Call("start_listener", lb.LBID))
	return err
}

// URL is the listener's address as the client sees it.
func (lb HTTPLoadBalancer) URL() string {
	return "http://" + VIP + ":" + strconv.Itoa(LBPort) + "/"
}

// MetricsURL is the PROMETHEUS listener's scrape address.
func (lb HTTPLoadBalancer) MetricsURL() string {
	return "http://" + VIP + ":" + strconv.Itoa(PromPort) + "/metrics"
}
