package netns

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
)

// HostRoute is a subnet host route as Neutron gives it.
type HostRoute struct {
	Destination string `json:"destination"`
	Nexthop     string `json:"nexthop"`
}

// VIPSubnet is one VIP with its subnet (the additional_vips entries).
type VIPSubnet struct {
	IPAddress  string      `json:"ip_address"`
	SubnetCIDR string      `json:"subnet_cidr"`
	Gateway    string      `json:"gateway"` // "" = none
	HostRoutes []HostRoute `json:"host_routes"`
}

// PlugVIPRequest is POST /1.0/plug/vip/<vip>.
type PlugVIPRequest struct {
	VIP            string // the path parameter
	SubnetCIDR     string
	Gateway        string // "" = none (JSON null)
	MACAddress     string // lower case after validation
	MTU            int    // 0 = not given
	VRRPIP         string // "" = not given
	HostRoutes     []HostRoute
	AdditionalVIPs []VIPSubnet
	IsSRIOV        bool
}

// FixedIP is one fixed IP of a port (POST /1.0/plug/network).
type FixedIP struct {
	IPAddress  string
	SubnetCIDR string
	Gateway    string
	HostRoutes []HostRoute
}

// VIPNetInfo is the vip_net_info object of POST /1.0/plug/network: sent
// when the port is the VIP/VRRP port and a subnet is added to it.
type VIPNetInfo struct {
	VIP            string
	SubnetCIDR     string
	Gateway        string
	VRRPIP         string
	HostRoutes     []HostRoute
	AdditionalVIPs []VIPSubnet
}

// PlugNetworkRequest is POST /1.0/plug/network.
type PlugNetworkRequest struct {
	MACAddress string
	FixedIPs   []FixedIP
	MTU        int
	VIPNetInfo *VIPNetInfo
	IsSRIOV    bool
}

// ParsePlugVIPRequest decodes and validates the body of
// POST /1.0/plug/vip/<vip>. Every problem is a *BadRequestError:
// structure problems are generic ("Invalid subnet information"), bad VIP
// addresses or subnets give "Invalid VIP: <reason>", a bad vrrp_ip
// "Invalid VRRP Address: <reason>".
func ParsePlugVIPRequest(vip string, body []byte) (*PlugVIPRequest, error) {
	obj, err := decodeObject(body)
	if err != nil {
		return nil, genericBadRequest(MsgInvalidSubnetInfo, "%w", err)
	}
	d := decoder{obj: obj}
	r := &PlugVIPRequest{VIP: vip}
	r.SubnetCIDR = d.str("subnet_cidr", true, false)
	r.Gateway = d.str("gateway", true, true)
	r.MACAddress = d.str("mac_address", true, false)
	r.MTU = d.int("mtu")
	r.VRRPIP = d.str("vrrp_ip", false, true)
	r.HostRoutes = d.hostRoutes(d.obj["host_routes"], "host_routes")
	r.AdditionalVIPs = d.vipSubnets(d.obj["additional_vips"], "additional_vips")
	r.IsSRIOV = d.bool("is_sriov")
	if d.err != nil {
		return nil, genericBadRequest(MsgInvalidSubnetInfo, "%w", d.err)
	}
	if _, err := r.plan(); err != nil {
		return nil, err
	}
	return r, nil
}

// ParsePlugNetworkRequest decodes and validates the body of
// POST /1.0/plug/network. Structure problems are generic ("Invalid port
// information"); a bad fixed IP entry gives "Invalid network port"; bad
// vip_net_info addresses "Invalid VIP: …" / "Invalid VRRP Address: …".
func ParsePlugNetworkRequest(body []byte) (*PlugNetworkRequest, error) {
	obj, err := decodeObject(body)
	if err != nil {
		return nil, genericBadRequest(MsgInvalidPortInfo, "%w", err)
	}
	d := decoder{obj: obj}
	r := &PlugNetworkRequest{}
	r.MACAddress = d.str("mac_address", true, false)
	r.MTU = d.int("mtu")
	r.IsSRIOV = d.bool("is_sriov")
	if d.err != nil {
		return nil, genericBadRequest(MsgInvalidPortInfo, "%w", d.err)
	}
	// fixed_ips: every entry must be usable (the reference answered 500
	// for entries without ip_address or with a bad subnet_cidr).
	if raw, ok := obj["fixed_ips"]; ok && raw != nil {
		list, ok := raw.([]any)
		if !ok {
			return nil, genericBadRequest(MsgInvalidPortInfo, "fixed_ips is not a list")
		}
		for i, item := range list {
			m, ok := item.(map[string]any)
			if !ok {
				return nil, &BadRequestError{Message: MsgInvalidNetPort, Err: fmt.Errorf("fixed_ips[%d] is not an object", i)}
			}
			ed := decoder{obj: m, where: fmt.Sprintf("fixed_ips[%d].", i)}
			f := FixedIP{
				IPAddress:  ed.str("ip_address", true, false),
				SubnetCIDR: ed.str("subnet_cidr", true, false),
				Gateway:    ed.str("gateway", false, true),
				HostRoutes: ed.hostRoutes(m["host_routes"], fmt.Sprintf("fixed_ips[%d].host_routes", i)),
			}
			if ed.err != nil {
				return nil, &BadRequestError{Message: MsgInvalidNetPort, Err: ed.err}
			}
			r.FixedIPs = append(r.FixedIPs, f)
		}
	}
	if raw, ok := obj["vip_net_info"]; ok && raw != nil {
		info, err := parseVIPNetInfo(raw)
		if err != nil {
			return nil, err
		}
		r.VIPNetInfo = info
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	return r, nil
}

// parseVIPNetInfo decodes vip_net_info; an empty object is falsy in the
// reference (a plain network plug) and gives nil.
func parseVIPNetInfo(raw any) (*VIPNetInfo, error) {
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, genericBadRequest(MsgInvalidPortInfo, "vip_net_info is not an object")
	}
	if len(m) == 0 {
		return nil, nil
	}
	vd := decoder{obj: m, where: "vip_net_info."}
	info := &VIPNetInfo{
		VIP:        vd.str("vip", true, false),
		SubnetCIDR: vd.str("subnet_cidr", true, false),
		Gateway:    vd.str("gateway", true, true),
		VRRPIP:     vd.str("vrrp_ip", false, true),
	}
	info.HostRoutes = vd.hostRoutes(m["host_routes"], "vip_net_info.host_routes")
	info.AdditionalVIPs = vd.vipSubnets(m["additional_vips"], "vip_net_info.additional_vips")
	if vd.err != nil {
		return nil, genericBadRequest(MsgInvalidPortInfo, "%w", vd.err)
	}
	return info, nil
}

// ---- semantic validation ----

// renderedVIP is a validated VIP with its subnet, as the interface files
// need it.
type renderedVIP struct {
	addr       netip.Addr
	text       string // exploded, as written by the reference
	subnet     netip.Prefix
	gateway    string
	hostRoutes []HostRoute
}

type renderedVRRP struct {
	addr      netip.Addr
	text      string // exploded
	prefixlen int
}

type vipPlan struct {
	vips []renderedVIP
	vrrp *renderedVRRP
}

func (r *PlugVIPRequest) plan() (*vipPlan, error) {
	mac, err := normalizeMAC(r.MACAddress)
	if err != nil {
		return nil, genericBadRequest(MsgInvalidSubnetInfo, "mac_address: %w", err)
	}
	r.MACAddress = mac
	if err := checkMTU(r.MTU); err != nil {
		return nil, genericBadRequest(MsgInvalidSubnetInfo, "%w", err)
	}
	return buildVIPPlan(r.VIP, r.SubnetCIDR, r.Gateway, r.HostRoutes, r.AdditionalVIPs, r.VRRPIP, MsgInvalidSubnetInfo)
}

func buildVIPPlan(vip, subnet, gateway string, routes []HostRoute, additional []VIPSubnet, vrrpIP, genericMsg string) (*vipPlan, error) {
	all := append([]VIPSubnet{{IPAddress: vip, SubnetCIDR: subnet, Gateway: gateway, HostRoutes: routes}}, additional...)
	p := &vipPlan{}
	for i, v := range all {
		a, err := parseIP(v.IPAddress)
		if err != nil {
			return nil, &BadRequestError{Message: "Invalid VIP: " + err.Error(), Err: err}
		}
		n, err := parseNetwork(v.SubnetCIDR, true)
		if err != nil {
			return nil, &BadRequestError{Message: "Invalid VIP: " + err.Error(), Err: err}
		}
		if n.Addr().Is4() != a.Is4() {
			err := fmt.Errorf("%s is not in the address family of %s", v.IPAddress, v.SubnetCIDR)
			return nil, &BadRequestError{Message: "Invalid VIP: " + err.Error(), Err: err}
		}
		where := "host_routes"
		if i > 0 {
			where = fmt.Sprintf("additional_vips[%d]", i-1)
		}
		if err := checkGateway(v.Gateway, a); err != nil {
			return nil, genericBadRequest(genericMsg, "%s gateway: %w", where, err)
		}
		if err := checkHostRoutes(v.HostRoutes); err != nil {
			return nil, genericBadRequest(genericMsg, "%s: %w", where, err)
		}
		p.vips = append(p.vips, renderedVIP{addr: a, text: exploded(a), subnet: n, gateway: v.Gateway, hostRoutes: v.HostRoutes})
	}
	if vrrpIP != "" {
		a, err := parseIP(vrrpIP)
		if err != nil {
			return nil, &BadRequestError{Message: "Invalid VRRP Address: " + err.Error(), Err: err}
		}
		p.vrrp = &renderedVRRP{addr: a, text: exploded(a), prefixlen: p.vips[0].subnet.Bits()}
	}
	return p, nil
}

func (r *PlugNetworkRequest) validate() error {
	mac, err := normalizeMAC(r.MACAddress)
	if err != nil {
		return genericBadRequest(MsgInvalidPortInfo, "mac_address: %w", err)
	}
	r.MACAddress = mac
	if err := checkMTU(r.MTU); err != nil {
		return genericBadRequest(MsgInvalidPortInfo, "%w", err)
	}
	for i, f := range r.FixedIPs {
		a, err := parseIP(f.IPAddress)
		if err != nil {
			return &BadRequestError{Message: MsgInvalidNetPort, Err: fmt.Errorf("fixed_ips[%d]: %w", i, err)}
		}
		n, err := parseNetwork(f.SubnetCIDR, true)
		if err != nil {
			return &BadRequestError{Message: MsgInvalidNetPort, Err: fmt.Errorf("fixed_ips[%d]: %w", i, err)}
		}
		if n.Addr().Is4() != a.Is4() {
			return &BadRequestError{Message: MsgInvalidNetPort, Err: fmt.Errorf("fixed_ips[%d]: %s is not in the address family of %s", i, f.IPAddress, f.SubnetCIDR)}
		}
		if err := checkGateway(f.Gateway, a); err != nil {
			return &BadRequestError{Message: MsgInvalidNetPort, Err: fmt.Errorf("fixed_ips[%d] gateway: %w", i, err)}
		}
		if err := checkHostRoutes(f.HostRoutes); err != nil {
			return &BadRequestError{Message: MsgInvalidNetPort, Err: fmt.Errorf("fixed_ips[%d]: %w", i, err)}
		}
	}
	if v := r.VIPNetInfo; v != nil {
		if _, err := buildVIPPlan(v.VIP, v.SubnetCIDR, v.Gateway, v.HostRoutes, v.AdditionalVIPs, v.VRRPIP, MsgInvalidPortInfo); err != nil {
			return err
		}
	}
	return nil
}

func checkMTU(mtu int) error {
	if mtu < 0 || mtu > 65535 || (mtu > 0 && mtu < 68) {
		return fmt.Errorf("mtu %d out of range", mtu)
	}
	return nil
}

func checkGateway(gw string, of netip.Addr) error {
	if gw == "" {
		return nil
	}
	g, err := parseIP(gw)
	if err != nil {
		return err
	}
	if g.Is4() != of.Is4() {
		return fmt.Errorf("gateway %s is not in the address family of %s", gw, of)
	}
	return nil
}

func checkHostRoutes(routes []HostRoute) error {
	for i, hr := range routes {
		d, err := parseNetwork(hr.Destination, false)
		if err != nil {
			return fmt.Errorf("host_routes[%d] destination: %w", i, err)
		}
		n, err := parseIP(hr.Nexthop)
		if err != nil {
			return fmt.Errorf("host_routes[%d] nexthop: %w", i, err)
		}
		if d.Addr().Is4() != n.Is4() {
			return fmt.Errorf("host_routes[%d]: nexthop %s and destination %s differ in address family", i, hr.Nexthop, hr.Destination)
		}
	}
	return nil
}

// ---- JSON structure decoding ----

func decodeObject(body []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("body is not JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON value")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("body is not a JSON object")
	}
	return m, nil
}

// decoder reads typed fields out of a decoded JSON object, remembering the
// first problem.
type decoder struct {
	obj   map[string]any
	where string
	err   error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

// str reads a string field. required: the key must exist. nullable: JSON
// null is accepted (as "").
func (d *decoder) str(key string, required, nullable bool) string {
	v, ok := d.obj[key]
	if !ok {
		if required {
			d.fail("%s%s is missing", d.where, key)
		}
		return ""
	}
	if v == nil {
		if !nullable {
			d.fail("%s%s is null", d.where, key)
		}
		return ""
	}
	s, ok := v.(string)
	if !ok {
		d.fail("%s%s is not a string", d.where, key)
	}
	return s
}

// int reads an optional non-negative integer field (null = 0).
func (d *decoder) int(key string) int {
	v, ok := d.obj[key]
	if !ok || v == nil {
		return 0
	}
	n, ok := v.(json.Number)
	if !ok {
		d.fail("%s%s is not a number", d.where, key)
		return 0
	}
	i, err := n.Int64()
	if err != nil {
		f, ferr := n.Float64()
		if ferr != nil || f != math.Trunc(f) {
			d.fail("%s%s is not an integer", d.where, key)
			return 0
		}
		i = int64(f)
	}
	if i < 0 || i > math.MaxInt32 {
		d.fail("%s%s is out of range", d.where, key)
		return 0
	}
	return int(i)
}

// bool reads an optional boolean field (null = false).
func (d *decoder) bool(key string) bool {
	v, ok := d.obj[key]
	if !ok || v == nil {
		return false
	}
	b, ok := v.(bool)
	if !ok {
		d.fail("%s%s is not a boolean", d.where, key)
	}
	return b
}

// objectList decodes the JSON list raw (nil: none) one object at a time
// with item, which reports false once it failed d. A value that is not a
// list or an entry that is not an object fails d, naming where.
func objectList[T any](d *decoder, raw any, where string, item func(i int, m map[string]any) (T, bool)) []T {
	if raw == nil {
		return nil
	}
	list, ok := raw.([]any)
	if !ok {
		d.fail("%s is not a list", where)
		return nil
	}
	out := make([]T, 0, len(list))
	for i, entry := range list {
		m, ok := entry.(map[string]any)
		if !ok {
			d.fail("%s[%d] is not an object", where, i)
			return nil
		}
		v, ok := item(i, m)
		if !ok {
			return nil
		}
		out = append(out, v)
	}
	return out
}

func (d *decoder) hostRoutes(raw any, where string) []HostRoute {
	return objectList(d, raw, where, func(i int, m map[string]any) (HostRoute, bool) {
		hd := decoder{obj: m}
		hr := HostRoute{Destination: hd.str("destination", true, false), Nexthop: hd.str("nexthop", true, false)}
		if hd.err != nil {
			d.fail("%s[%d]: %v", where, i, hd.err)
			return hr, false
		}
		return hr, true
	})
}

func (d *decoder) vipSubnets(raw any, where string) []VIPSubnet {
	return objectList(d, raw, where, func(i int, m map[string]any) (VIPSubnet, bool) {
		vd := decoder{obj: m, where: fmt.Sprintf("%s[%d].", where, i)}
		v := VIPSubnet{
			IPAddress:  vd.str("ip_address", true, false),
			SubnetCIDR: vd.str("subnet_cidr", true, false),
			Gateway:    vd.str("gateway", false, true),
		}
		v.HostRoutes = vd.hostRoutes(m["host_routes"], fmt.Sprintf("%s[%d].host_routes", where, i))
		if vd.err != nil {
			d.fail("%v", vd.err)
			return v, false
		}
		return v, true
	})
}
