package netns

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
)

// Interface types of the interface files.
const (
	IfTypeLo      = "lo"
	IfTypeVIP     = "vip"
	IfTypeBackend = "backend"
)

// Topologies ([controller_worker] loadbalancer_topology).
const (
	TopologySingle        = "SINGLE"
	TopologyActiveStandby = "ACTIVE_STANDBY"
)

// primaryInterface is the name of the VIP interface inside the namespace.
const primaryInterface = "eth1"

// masqueradeScript is the command the reference writes in the scripts
// entries. We apply its effect ourselves (masquerade.go); the entries are
// kept so that files stay interchangeable with the reference's.
const masqueradeScript = "/usr/local/bin/lvs-masquerade.sh"

// InterfaceFile is one interface description file
// (<network_dir>/<name>.json), in the reference agent's format.
type InterfaceFile struct {
	Name      string
	IfType    string
	Addresses []Address
	Routes    []Route
	Rules     []Rule
	Scripts   Scripts
	IsSRIOV   bool
	MTU       int // 0 = not set (key absent)
}

// Address is an entry of "addresses": a static address, a VIP address
// (OctaviaOwned set), or a DHCP / SLAAC marker.
type Address struct {
	Address      string
	Prefixlen    int
	OctaviaOwned *bool // nil: key absent (owned)
	DHCP         bool
	IPv6Auto     bool
}

// Owned reports whether the agent adds and removes the address (false
// for VIPs keepalived manages in ACTIVE_STANDBY).
func (a Address) Owned() bool { return a.OctaviaOwned == nil || *a.OctaviaOwned }

// Route is an entry of "routes".
type Route struct {
	Dst     string   `json:"dst,omitempty"`
	Gateway string   `json:"gateway,omitempty"`
	Prefsrc string   `json:"prefsrc,omitempty"`
	Flags   []string `json:"flags,omitempty"`
	Scope   string   `json:"scope,omitempty"`
	Table   int      `json:"table,omitempty"` // 0 = main
}

// Rule is an entry of "rules": from Src/SrcLen lookup Table.
type Rule struct {
	Src    string `json:"src"`
	SrcLen int    `json:"src_len"`
	Table  int    `json:"table,omitempty"`
}

// Scripts are the up/down commands of the file.
type Scripts struct {
	Up   []Script `json:"up"`
	Down []Script `json:"down"`
}

// Script is one command (split on spaces, never run through a shell).
type Script struct {
	Command string `json:"command"`
}

// ---- JSON encoding, byte-compatible with the reference ----

type addressJSON struct {
	Address      *string `json:"address,omitempty"`
	Prefixlen    *int    `json:"prefixlen,omitempty"`
	OctaviaOwned *bool   `json:"octavia_owned,omitempty"`
	DHCP         *bool   `json:"dhcp,omitempty"`
	IPv6Auto     *bool   `json:"ipv6auto,omitempty"`
}

// MarshalJSON writes the keys the reference writes, in its order.
func (a Address) MarshalJSON() ([]byte, error) {
	var j addressJSON
	if a.Address != "" {
		j.Address, j.Prefixlen, j.OctaviaOwned = &a.Address, &a.Prefixlen, a.OctaviaOwned
	}
	t := true
	if a.DHCP {
		j.DHCP = &t
	}
	if a.IPv6Auto {
		j.IPv6Auto = &t
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads an address entry (missing keys are zero values).
func (a *Address) UnmarshalJSON(b []byte) error {
	var j addressJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*a = Address{OctaviaOwned: j.OctaviaOwned}
	if j.Address != nil {
		a.Address = *j.Address
	}
	if j.Prefixlen != nil {
		a.Prefixlen = *j.Prefixlen
	}
	a.DHCP = j.DHCP != nil && *j.DHCP
	a.IPv6Auto = j.IPv6Auto != nil && *j.IPv6Auto
	return nil
}

type fileJSON struct {
	Name      string    `json:"name"`
	IfType    string    `json:"if_type"`
	Addresses []Address `json:"addresses"`
	Routes    []Route   `json:"routes"`
	Rules     []Rule    `json:"rules"`
	Scripts   Scripts   `json:"scripts"`
	IsSRIOV   bool      `json:"is_sriov"`
	MTU       int       `json:"mtu,omitempty"`
}

// Marshal renders the file exactly as the reference does: keys in its
// order, Python's default separators (", " and ": "), no newline.
func (f *InterfaceFile) Marshal() ([]byte, error) {
	j := fileJSON{
		Name: f.Name, IfType: f.IfType, Addresses: f.Addresses, Routes: f.Routes,
		Rules: f.Rules, Scripts: f.Scripts, IsSRIOV: f.IsSRIOV, MTU: f.MTU,
	}
	if j.Addresses == nil {
		j.Addresses = []Address{}
	}
	if j.Routes == nil {
		j.Routes = []Route{}
	}
	if j.Rules == nil {
		j.Rules = []Rule{}
	}
	if j.Scripts.Up == nil {
		j.Scripts.Up = []Script{}
	}
	if j.Scripts.Down == nil {
		j.Scripts.Down = []Script{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(j); err != nil {
		return nil, err
	}
	return pythonSeparators(bytes.TrimRight(buf.Bytes(), "\n")), nil
}

// pythonSeparators turns compact JSON into Python json.dumps' default
// layout: a space after every ',' and ':' outside strings.
func pythonSeparators(compact []byte) []byte {
	out := make([]byte, 0, len(compact)+len(compact)/4)
	inStr, esc := false, false
	for _, c := range compact {
		out = append(out, c)
		switch {
		case inStr && esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case c == '"':
			inStr = !inStr
		case !inStr && (c == ',' || c == ':'):
			out = append(out, ' ')
		}
	}
	return out
}

// ParseInterfaceFile reads a file written by this agent or by a reference
// agent, including 11.0.0 files without if_type / is_sriov (if_type is
// then inferred: "vip" for eth1, "lo" for lo, "backend" otherwise).
func ParseInterfaceFile(data []byte) (*InterfaceFile, error) {
	var j struct {
		Name      *string   `json:"name"`
		IfType    *string   `json:"if_type"`
		Addresses []Address `json:"addresses"`
		Routes    []Route   `json:"routes"`
		Rules     []Rule    `json:"rules"`
		Scripts   *Scripts  `json:"scripts"`
		IsSRIOV   *bool     `json:"is_sriov"`
		MTU       *int      `json:"mtu"`
	}
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, err
	}
	if j.Name == nil || *j.Name == "" {
		return nil, errors.New("no interface name")
	}
	f := &InterfaceFile{Name: *j.Name, Addresses: j.Addresses, Routes: j.Routes, Rules: j.Rules}
	switch {
	case j.IfType != nil && *j.IfType != "":
		f.IfType = *j.IfType
	case f.Name == "lo":
		f.IfType = IfTypeLo
	case f.Name == primaryInterface:
		f.IfType = IfTypeVIP
	default:
		f.IfType = IfTypeBackend
	}
	if j.Scripts != nil {
		f.Scripts = *j.Scripts
	}
	if j.IsSRIOV != nil {
		f.IsSRIOV = *j.IsSRIOV
	}
	if j.MTU != nil {
		f.MTU = *j.MTU
	}
	return f, nil
}

// ---- builders (NETWORK.md §5.3–5.5) ----

func loopbackFile() *InterfaceFile {
	return &InterfaceFile{
		Name: "lo", IfType: IfTypeLo,
		Addresses: []Address{{Address: "127.0.0.1", Prefixlen: 8}},
	}
}

func defaultDst(a netip.Addr) string {
	if a.Is4() {
		return "0.0.0.0/0"
	}
	return "::/0"
}

func hostRouteEntries(routes []HostRoute, table int) []Route {
	out := make([]Route, 0, len(routes))
	for _, hr := range routes {
		out = append(out, Route{Dst: hr.Destination, Gateway: hr.Nexthop, Flags: []string{"onlink"}, Table: table})
	}
	return out
}

// vipFile builds the VIP interface file. fixedIPs are the extra addresses
// of the update path (plug network with vip_net_info).
func vipFile(name string, mtu int, plan *vipPlan, fixedIPs []FixedIP, topology string, sriov bool) *InterfaceFile {
	f := &InterfaceFile{Name: name, IfType: IfTypeVIP, MTU: mtu, IsSRIOV: sriov}
	single := topology != TopologyActiveStandby
	has4, has6 := false, false
	for _, v := range plan.vips {
		if v.addr.Is4() {
			has4 = true
		} else {
			has6 = true
		}
	}
	if plan.vrrp != nil {
		f.Addresses = append(f.Addresses, Address{Address: plan.vrrp.text, Prefixlen: plan.vrrp.prefixlen})
	} else {
		if has4 {
			f.Addresses = append(f.Addresses, Address{DHCP: true})
		}
		if has6 {
			f.Addresses = append(f.Addresses, Address{IPv6Auto: true})
		}
	}
	versions := map[int]bool{}
	for _, v := range plan.vips {
		versions[ipVersion(v.addr)] = true
		if v.gateway != "" {
			f.Routes = append(f.Routes, Route{Dst: defaultDst(v.addr), Gateway: v.gateway, Flags: []string{"onlink"}})
			if single {
				f.Routes = append(f.Routes, Route{Dst: defaultDst(v.addr), Gateway: v.gateway, Flags: []string{"onlink"}, Table: 1})
			}
		}
		owned := single
		f.Addresses = append(f.Addresses, Address{Address: v.text, Prefixlen: v.addr.BitLen(), OctaviaOwned: &owned})
		subnet := explodedPrefix(netip.PrefixFrom(v.addr, v.subnet.Bits()))
		f.Routes = append(f.Routes, Route{Dst: subnet, Scope: "link"})
		if single {
			f.Routes = append(f.Routes, Route{Dst: subnet, Prefsrc: v.text, Scope: "link", Table: 1})
			f.Rules = append(f.Rules, Rule{Src: v.text, SrcLen: v.addr.BitLen(), Table: 1})
		}
		f.Routes = append(f.Routes, hostRouteEntries(v.hostRoutes, 0)...)
		f.Routes = append(f.Routes, hostRouteEntries(v.hostRoutes, 1)...)
	}
	for _, fip := range fixedIPs {
		a, _ := parseIP(fip.IPAddress) // validated
		n, _ := parseNetwork(fip.SubnetCIDR, true)
		f.Addresses = append(f.Addresses, Address{Address: fip.IPAddress, Prefixlen: n.Bits()})
		versions[ipVersion(a)] = true
		if fip.Gateway != "" {
			f.Routes = append(f.Routes, Route{Dst: defaultDst(a), Gateway: fip.Gateway, Flags: []string{"onlink"}})
			if single {
				f.Routes = append(f.Routes, Route{Dst: defaultDst(a), Gateway: fip.Gateway, Flags: []string{"onlink"}, Table: 1})
			}
		}
		f.Routes = append(f.Routes, hostRouteEntries(fip.HostRoutes, 0)...)
	}
	f.Scripts = masqueradeScripts(name, versions, sriov)
	return f
}

// backendFile builds the file of a member-network port.
func backendFile(name string, mtu int, fixedIPs []FixedIP, sriov bool) *InterfaceFile {
	f := &InterfaceFile{Name: name, IfType: IfTypeBackend, MTU: mtu, IsSRIOV: sriov}
	versions := map[int]bool{}
	if len(fixedIPs) == 0 {
		versions[4], versions[6] = true, true
		f.Addresses = []Address{{DHCP: true, IPv6Auto: true}}
	}
	for _, fip := range fixedIPs {
		a, _ := parseIP(fip.IPAddress) // validated
		n, _ := parseNetwork(fip.SubnetCIDR, true)
		f.Addresses = append(f.Addresses, Address{Address: fip.IPAddress, Prefixlen: n.Bits()})
		versions[ipVersion(a)] = true
		f.Routes = append(f.Routes, hostRouteEntries(fip.HostRoutes, 0)...)
	}
	f.Scripts = masqueradeScripts(name, versions, sriov)
	return f
}

func masqueradeScripts(name string, versions map[int]bool, sriov bool) Scripts {
	s := Scripts{Up: []Script{}, Down: []Script{}}
	suffix := ""
	if sriov {
		suffix = " sriov"
	}
	for _, v := range []int{4, 6} {
		if !versions[v] {
			continue
		}
		fam := fmt.Sprintf("ipv%d", v)
		s.Up = append(s.Up, Script{Command: fmt.Sprintf("%s add %s %s%s", masqueradeScript, fam, name, suffix)})
		s.Down = append(s.Down, Script{Command: fmt.Sprintf("%s delete %s %s%s", masqueradeScript, fam, name, suffix)})
	}
	return s
}

// ---- the directory ----

func (m *Manager) filePath(name string) string {
	return filepath.Join(m.cfg.NetworkDir, name+".json")
}

// writeInterfaceFile writes the file atomically (mode 0644), creating the
// directory if needed.
func (m *Manager) writeInterfaceFile(f *InterfaceFile) error {
	if err := validIfName(f.Name); err != nil {
		return err
	}
	data, err := f.Marshal()
	if err != nil {
		return fmt.Errorf("render interface file %s: %w", f.Name, err)
	}
	if err := os.MkdirAll(m.cfg.NetworkDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", m.cfg.NetworkDir, err)
	}
	return fsutil.WriteFile(m.filePath(f.Name), data, 0o644)
}

// readInterfaceFiles reads every *.json file of the network directory,
// keyed by interface name, plus the names in directory order. A missing
// directory is an empty set. Unreadable files are returned in bad.
func (m *Manager) readInterfaceFiles() (files map[string]*InterfaceFile, order []string, bad map[string]error, err error) {
	entries, err := os.ReadDir(m.cfg.NetworkDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return map[string]*InterfaceFile{}, nil, nil, nil
		}
		return nil, nil, nil, fmt.Errorf("read %s: %w", m.cfg.NetworkDir, err)
	}
	files = map[string]*InterfaceFile{}
	bad = map[string]error{}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		p := filepath.Join(m.cfg.NetworkDir, e.Name())
		data, err := os.ReadFile(p)
		if err != nil {
			bad[strings.TrimSuffix(e.Name(), ".json")] = err
			continue
		}
		f, err := ParseInterfaceFile(data)
		if err != nil {
			bad[strings.TrimSuffix(e.Name(), ".json")] = fmt.Errorf("%s: %w", p, err)
			continue
		}
		if _, dup := files[f.Name]; !dup {
			order = append(order, f.Name)
		}
		files[f.Name] = f
	}
	sort.SliceStable(order, func(i, j int) bool { return order[i] == "lo" && order[j] != "lo" })
	return files, order, bad, nil
}

// readInterfaceFile reads <name>.json (os.ErrNotExist when absent).
func (m *Manager) readInterfaceFile(name string) (*InterfaceFile, error) {
	data, err := os.ReadFile(m.filePath(name))
	if err != nil {
		return nil, err
	}
	return ParseInterfaceFile(data)
}

func validIfName(name string) error {
	if name == "" || len(name) > 15 || name == "." || name == ".." || strings.ContainsAny(name, "/ \t\n:\x00") {
		return fmt.Errorf("invalid interface name %q", name)
	}
	return nil
}
