package keepalived

// Tests of the UDP/SCTP listeners (keepalived in LVS mode).
//
// This kernel has no IPVS (CONFIG_IP_VS is not set, /proc/net/ip_vs does
// not exist): the real keepalived exits as soon as its checker tries to
// program a virtual server (verified: "IPVS: Can't initialize ipvs ...",
// exit 1, ~120 ms after start). What does not need IPVS runs for real
// here: `keepalived -t` on the controller's configurations, keepalived
// itself for a listener without virtual server (it then runs with no
// configuration, as on an amphora), the service managers (built-in
// supervisor and a private systemd manager), the files and the check
// scripts. Where a listener with virtual servers must be running, a
// stand-in keepalived (fakeKeepalived) plays its part; the IPVS tables
// (`ipvsadm` output and /proc/net/ip_vs) are synthetic texts in the
// formats of ipvsadm 1.31 and of the kernel's ip_vs_ctl.c, injected
// through LVSOptions.Run and LVSOptions.KernelTable.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/internal/testutil"
	"github.com/octavia-go/amphora-agent/service"
)

// fakeKeepalived stands in for keepalived in LVS mode because the kernel
// lacks IPVS (see the file comment). Towards the agent and the service
// managers it behaves like keepalived: -t runs the real keepalived; it
// writes the checker's and then the main pid file, forks unless -n,
// "reloads" on SIGHUP, and on SIGTERM stops its checker and removes its
// pid files. Its processes are named keepalived (the script's name).
const fakeKeepalived = `#!/bin/bash
for a in "$@"; do
	if [ "$a" = "-t" ]; then exec /usr/sbin/keepalived "$@"; fi
done
fg=0 pidf= chkf= conf=
while [ $# -gt 0 ]; do
	case "$1" in
	-n) fg=1 ;;
	-p) pidf=$2; shift ;;
	-c) chkf=$2; shift ;;
	-f) conf=$2; shift ;;
	esac
	shift
done
[ -r "$conf" ] || { echo "fake keepalived: cannot read $conf" >&2; exit 1; }
serve() {
	sleep 100000 &
	checker=$!
	echo "$checker" > "$chkf"
	echo "$BASHPID" > "$pidf"
	echo "fake keepalived: running $conf"
	trap 'kill "$checker" 2>/dev/null; rm -f "$pidf" "$chkf"; exit 0' TERM INT
	trap 'echo "fake keepalived: reload"' HUP
	while kill -0 "$checker" 2>/dev/null; do
		wait "$checker"
	done
	rm -f "$pidf" "$chkf"
	exit 1
}
if [ "$fg" = 1 ]; then
	serve
fi
serve </dev/null >/dev/null 2>&1 &
for i in $(seq 200); do
	[ -s "$pidf" ] && exit 0
	sleep 0.05
done
exit 1
`

// renderLVS renders spec (test/interop/render_lvs.py) with the
// controller's own templater.
func renderLVS(t *testing.T, spec map[string]any) []byte {
	t.Helper()
	return testutil.RenderLVS(t, spec)[0]
}

// lvsSpec is a UDP listener on two IPv4 VIPs and one IPv6 VIP with a
// UDP-CONNECT monitor and three members: enabled, disabled, enabled with
// weight 0 (IPv6).
type lvsSpec struct {
	lb, listener, pool, monitor string
	m1, m2, m3                  string
}

func newLVSSpec() lvsSpec {
	return lvsSpec{lb: testutil.NewUUID(), listener: testutil.NewUUID(), pool: testutil.NewUUID(), monitor: testutil.NewUUID(),
		m1: testutil.NewUUID(), m2: testutil.NewUUID(), m3: testutil.NewUUID()}
}

func (s lvsSpec) render(base string, edit func(spec map[string]any)) map[string]any {
	spec := map[string]any{
		"lb_id": s.lb, "base_path": base,
		"vips": []string{"198.51.100.10", "198.51.100.11", "2001:db8::10"},
		"listener": map[string]any{
			"id": s.listener, "protocol": "UDP", "port": 53, "connection_limit": 1000,
			"pool": map[string]any{
				"id": s.pool,
				"monitor": map[string]any{"id": s.monitor, "type": "UDP-CONNECT", "delay": 5, "timeout": 3,
					"fall": 3},
				"members": []map[string]any{
					{"id": s.m1, "address": "10.0.0.5", "port": 5353},
					{"id": s.m2, "address": "10.0.0.6", "port": 5353, "enabled": false},
					{"id": s.m3, "address": "2001:db8::5", "port": 5353, "weight": 0},
				},
			},
		},
	}
	if edit != nil {
		edit(spec)
	}
	return spec
}

func listenerOf(spec map[string]any) map[string]any { return spec["listener"].(map[string]any) }
func poolOf(spec map[string]any) map[string]any {
	return listenerOf(spec)["pool"].(map[string]any)
}

func TestParseLVSConfigRendered(t *testing.T) {
	s := newLVSSpec()
	confs := testutil.RenderLVS(t, s.render("/var/lib/octavia", nil),
		s.render("/b", func(spec map[string]any) {
			listenerOf(spec)["protocol"] = "SCTP"
			poolOf(spec)["monitor"] = nil
		}),
		s.render("/b", func(spec map[string]any) { listenerOf(spec)["enabled"] = false }),
		s.render("/b", func(spec map[string]any) { listenerOf(spec)["pool"] = nil }))
	got := ParseLVSConfig(confs[0])
	want := &LVSConfig{
		Namespace: "amphora-haproxy", ListenerID: s.listener, Protocol: "UDP",
		VIPs: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.10:53"),
			netip.MustParseAddrPort("198.51.100.11:53"), netip.MustParseAddrPort("[2001:db8::10]:53")},
		VirtualServer: true, PoolID: s.pool, Monitor: true,
		Members: []LVSMember{
			{ID: s.m1, Addr: netip.MustParseAddrPort("10.0.0.5:5353")},
			{ID: s.m3, Addr: netip.MustParseAddrPort("[2001:db8::5]:5353")},
			{ID: s.m2, Disabled: true},
		},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Errorf("parsed configuration (-want +got):\n%s", diff)
	}

	// SCTP without monitor, disabled listener, no pool.
	sctp := ParseLVSConfig(confs[1])
	if sctp.Protocol != "SCTP" || sctp.Monitor || sctp.PoolID != s.pool || len(sctp.Members) != 3 {
		t.Errorf("SCTP without monitor: %+v", sctp)
	}
	off := ParseLVSConfig(confs[2])
	if !off.Disabled || off.VirtualServer || len(off.VIPs) != 0 || off.PoolID != "" {
		t.Errorf("disabled listener: %+v", off)
	}
	bare := ParseLVSConfig(confs[3])
	if bare.Disabled || bare.VirtualServer || len(bare.VIPs) != 0 || bare.ListenerID != s.listener {
		t.Errorf("listener without pool: %+v", bare)
	}
}

// Every configuration shape the controller renders passes validation
// (the reference stores them unchecked; refusing one would break a
// listener the reference runs), and broken ones do not.
func TestValidateRenderedLVSConfigs(t *testing.T) {
	testutil.RequireBinary(t, DefaultCmd)
	testutil.RequireLVSRenderer(t)
	dir := t.TempDir()
	m := NewLVSManager(LVSOptions{Common: Common{BasePath: dir, Namespace: "amphora-haproxy"}})
	s := newLVSSpec()
	variants := map[string]func(spec map[string]any){
		"dual stack UDP-CONNECT": nil,
		"IPv6 only":              func(spec map[string]any) { spec["vips"] = []string{"2001:db8::10"} },
		"SCTP monitor": func(spec map[string]any) {
			listenerOf(spec)["protocol"] = "SCTP"
			poolOf(spec)["monitor"].(map[string]any)["type"] = "SCTP"
		},
		"HTTP monitor": func(spec map[string]any) { poolOf(spec)["monitor"].(map[string]any)["type"] = "HTTP" },
		"TCP monitor":  func(spec map[string]any) { poolOf(spec)["monitor"].(map[string]any)["type"] = "TCP" },
		"no monitor":   func(spec map[string]any) { poolOf(spec)["monitor"] = nil },
		"disabled monitor": func(spec map[string]any) {
			poolOf(spec)["monitor"].(map[string]any)["enabled"] = false
		},
		"source ip persistence, dual stack": func(spec map[string]any) {
			poolOf(spec)["session_persistence"] = map[string]any{"type": "SOURCE_IP"}
			poolOf(spec)["lb_algorithm"] = "SOURCE_IP"
		},
		"least connections, monitor address": func(spec map[string]any) {
			poolOf(spec)["lb_algorithm"] = "LEAST_CONNECTIONS"
			poolOf(spec)["members"].([]map[string]any)[0]["monitor_address"] = "10.0.0.50"
			poolOf(spec)["members"].([]map[string]any)[0]["monitor_port"] = 1053
		},
		"all weights 0": func(spec map[string]any) {
			spec["vips"] = []string{"2001:db8::10"}
		},
		"no members":        func(spec map[string]any) { poolOf(spec)["members"] = []map[string]any{} },
		"disabled pool":     func(spec map[string]any) { poolOf(spec)["enabled"] = false },
		"no pool":           func(spec map[string]any) { listenerOf(spec)["pool"] = nil },
		"disabled listener": func(spec map[string]any) { listenerOf(spec)["enabled"] = false },
		"disabled LB":       func(spec map[string]any) { spec["lb_enabled"] = false },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var names []string
	var specs []map[string]any
	for name, edit := range variants {
		names = append(names, name)
		specs = append(specs, s.render(dir, edit))
	}
	for i, conf := range testutil.RenderLVS(t, specs...) {
		path := filepath.Join(dir, strings.ReplaceAll(names[i], " ", "_")+".conf")
		if err := os.WriteFile(path, conf, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := m.validate(ctx, path); err != nil {
			t.Errorf("%s: refused: %v", names[i], err)
		}
	}
	for name, text := range map[string]string{
		"unknown keyword": "net_namespace amphora-haproxy\nvirtual_server_group g {\n    198.51.100.10 53\n}\n" +
			"virtual_server group g {\n    lb_algo wrr\n    protocol UDP\n    delay_lop 5\n" +
			"    real_server 10.0.0.5 53 {\n        weight 1\n    }\n}\n",
		"missing brace": "net_namespace amphora-haproxy\nvirtual_server_group g {\n    198.51.100.10 53\n",
	} {
		path := filepath.Join(dir, "bad.conf")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		var ve *ValidationError
		if err := m.validate(ctx, path); !errors.As(err, &ve) {
			t.Errorf("%s: accepted (%v)", name, err)
		} else if strings.Contains(ve.Output, path) {
			t.Errorf("%s: diagnostics name the staging path: %s", name, ve.Output)
		}
	}
}

// Synthetic IPVS tables (see the file comment), in the formats of
// ipvsadm 1.31 (-Ln, -Ln --stats --exact) and of /proc/net/ip_vs.
const (
	ipvsadmPlain = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  192.0.2.99:80 rr
  -> 192.0.2.98:80                Masq    1      9          0
UDP  198.51.100.10:53 wrr persistent 360
  -> 10.0.0.5:5353                Masq    1      2          0
UDP  198.51.100.11:53 wrr persistent 360
  -> 10.0.0.5:5353                Masq    1      3          1
UDP  [2001:db8::10]:53 wrr
  -> [2001:db8::5]:5353           Masq    0      1          0
`
	ipvsadmStats = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  192.0.2.99:80                     999      999      999      999      999
  -> 192.0.2.98:80                     999      999      999      999      999
UDP  198.51.100.10:53                   10       20       18     1600     2400
  -> 10.0.0.5:5353                      10       20       18     1600     2400
UDP  198.51.100.11:53                    5       10        9      800     1200
  -> 10.0.0.5:5353                       5       10        9      800     1200
UDP  [2001:db8::10]:53                   1        2        2      160      240
  -> [2001:db8::5]:5353                  1        2        2      160      240
`
	// keepalived removed member 10.0.0.5 from the second VIP's service
	// (only the first VIP was looked at by the reference, GAPS E5).
	kernelTable = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
UDP  C6336403:0035 wrr persistent 360 FFFFFFFF
UDP  C633640A:0035 wrr persistent 360 FFFFFFFF
  -> 0A000005:14E9      Masq    1      2          0
UDP  [2001:0db8:0000:0000:0000:0000:0000:0010]:0035 wrr
  -> [2001:0db8:0000:0000:0000:0000:0000:0005]:14E9      Masq    0      1          0
`
)

func TestParseIPVSTables(t *testing.T) {
	plain := parseIPVSAdm([]byte(ipvsadmPlain))
	v4 := ipvsKey{"UDP", netip.MustParseAddrPort("198.51.100.11:53")}
	if s := plain[v4]; s == nil || len(s.Servers) != 1 || s.Servers[0].Values["ActiveConn"] != "3" ||
		s.Values["Scheduler"] != "wrr" {
		t.Errorf("ipvsadm -Ln %v: %+v", v4, s)
	}
	stats := parseIPVSAdm([]byte(ipvsadmStats))
	v6 := ipvsKey{"UDP", netip.MustParseAddrPort("[2001:db8::10]:53")}
	if s := stats[v6]; s == nil || s.int64Value("OutBytes") != 240 || s.int64Value("Conns") != 1 {
		t.Errorf("ipvsadm --stats %v: %+v", v6, s)
	}
	k := parseKernelTable([]byte(kernelTable))
	var got []string
	for key, s := range k {
		for _, rs := range s.Servers {
			got = append(got, fmt.Sprintf("%s %s -> %s w%s", key.Proto, key.Addr, rs.Addr, rs.Values["Weight"]))
		}
	}
	slices.Sort(got)
	want := []string{
		"UDP 198.51.100.10:53 -> 10.0.0.5:5353 w1",
		"UDP [2001:db8::10]:53 -> [2001:db8::5]:5353 w0",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("kernel table (-want +got):\n%s", diff)
	}
	if len(k) != 3 {
		t.Errorf("kernel table services: %d", len(k))
	}
}

// HEARTBEAT.md §8.3, every rule, over all VIPs (GAPS E5).
func TestPoolStatusRules(t *testing.T) {
	ap := netip.MustParseAddrPort
	vip4, vip4b, vip6 := ap("198.51.100.10:53"), ap("198.51.100.11:53"), ap("[2001:db8::10]:53")
	members := []LVSMember{
		{ID: "up", Addr: ap("10.0.0.5:5353")},
		{ID: "v6drain", Addr: ap("[2001:db8::5]:5353")},
		{ID: "gone", Addr: ap("10.0.0.7:5353")},
		{ID: "off", Disabled: true},
	}
	k := parseKernelTable([]byte(kernelTable))
	cases := []struct {
		name       string
		cfg        LVSConfig
		table      ipvsTable
		restarting bool
		want       LVSPool
	}{
		{"no member", LVSConfig{PoolID: "p", VIPs: []netip.AddrPort{vip4}, Monitor: true}, k, false,
			LVSPool{Status: "UP", Members: map[string]string{}}},
		{"monitor, in table", LVSConfig{Protocol: "UDP", VIPs: []netip.AddrPort{vip4b, vip4, vip6}, Monitor: true, Members: members}, k, false,
			LVSPool{Status: "UP", Members: map[string]string{"up": "UP", "v6drain": "DRAIN", "gone": "DOWN", "off": "MAINT"}}},
		{"restarting", LVSConfig{VIPs: []netip.AddrPort{vip4, vip6}, Monitor: true, Members: members}, k, true,
			LVSPool{Status: "UP", Members: map[string]string{"up": "UP", "v6drain": "DRAIN", "gone": "RESTARTING", "off": "MAINT"}}},
		{"no monitor", LVSConfig{VIPs: []netip.AddrPort{vip4, vip6}, Members: members}, k, false,
			LVSPool{Status: "UP", Members: map[string]string{"up": "no check", "v6drain": "DRAIN", "gone": "DOWN", "off": "MAINT"}}},
		{"only the second VIP's service has servers", LVSConfig{VIPs: []netip.AddrPort{vip4b, vip4}, Monitor: true, Members: members[:1]}, k, false,
			LVSPool{Status: "UP", Members: map[string]string{"up": "UP"}}},
		{"other protocol", LVSConfig{Protocol: "SCTP", VIPs: []netip.AddrPort{vip4}, Monitor: true, Members: members}, k, false,
			LVSPool{Status: "DOWN", Members: map[string]string{"up": "DOWN", "v6drain": "DOWN", "gone": "DOWN", "off": "MAINT"}}},
		{"empty table, monitor", LVSConfig{VIPs: []netip.AddrPort{vip4}, Monitor: true, Members: members}, ipvsTable{}, true,
			LVSPool{Status: "DOWN", Members: map[string]string{"up": "RESTARTING", "v6drain": "RESTARTING", "gone": "RESTARTING", "off": "MAINT"}}},
		{"empty table, no monitor", LVSConfig{VIPs: []netip.AddrPort{vip4}, Members: members}, ipvsTable{}, false,
			LVSPool{Status: "UP", Members: map[string]string{"up": "no check", "v6drain": "no check", "gone": "no check", "off": "MAINT"}}},
	}
	for _, c := range cases {
		if diff := cmp.Diff(c.want, poolStatus(&c.cfg, c.table, c.restarting)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c.name, diff)
		}
	}
}

func TestListenerStatsSumsEveryVIP(t *testing.T) {
	ap := netip.MustParseAddrPort
	plain, stats := parseIPVSAdm([]byte(ipvsadmPlain)), parseIPVSAdm([]byte(ipvsadmStats))
	c := &LVSConfig{Protocol: "UDP", VIPs: []netip.AddrPort{ap("198.51.100.10:53"), ap("198.51.100.11:53"), ap("[2001:db8::10]:53")}}
	want := LVSListenerStats{Status: "OPEN", InBytes: 2560, OutBytes: 3840, Conns: 16, ActiveConns: 6}
	if diff := cmp.Diff(want, listenerStats(c, plain, stats)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// missing from one of the outputs: zeros, as the reference
	if got := listenerStats(c, plain, ipvsTable{}); got != (LVSListenerStats{Status: "OPEN"}) {
		t.Errorf("not in the stats output: %+v", got)
	}
}

// lvsEnv is one test's amphora: a data-plane namespace, a service
// manager, an LVS manager (and the VRRP manager for the check scripts).
type lvsEnv struct {
	t     *testing.T
	dir   string
	ns    *testutil.NetNS
	base  string // base_path
	units service.Manager
	m     *LVSManager
	vrrp  *Manager
	agent string
	// unitDir is where the systemd units are written ("" for builtin).
	unitDir string

	mu         sync.Mutex
	advertised [][]string
	refreshes  int
	ipvsadm    [][]string
	plain      string
	stats      string
	kernel     string
	ipvsErr    error
}

// newLVSEnv starts an environment; manager is "builtin" or "systemd",
// keepalived the binary the services run.
func newLVSEnv(t *testing.T, manager, keepalived, topology string) *lvsEnv {
	t.Helper()
	testutil.RequireBinary(t, DefaultCmd)
	e := &lvsEnv{t: t, agent: testutil.Binary(t)}
	dir := testutil.ShortDir(t, "lvs")
	e.dir = dir
	e.ns = testutil.NewNetNS(t, "lvs-dp")
	e.base = filepath.Join(dir, "lib")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	systemd := manager == "systemd"
	if systemd {
		sd := testutil.StartSystemdManager(t)
		unit := "[Unit]\nDescription=test stand-in for the amphora namespace unit\nStopWhenUnneeded=true\n\n" +
			"[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"
		if err := os.WriteFile(filepath.Join(sd.UnitDir, "amphora-netns.service"), []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		u, err := service.NewSystemd(ctx, service.SystemdOptions{UnitDir: sd.UnitDir,
			PrivateSocket: filepath.Join(sd.Dir, "run", "systemd", "private")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("systemd manager log:\n%s", sd.Log())
			}
		})
		e.units = u
		e.unitDir = sd.UnitDir
	} else {
		sup, err := service.NewSupervisor(service.SupervisorOptions{StateDir: filepath.Join(dir, "sup")})
		if err != nil {
			t.Fatal(err)
		}
		e.units = sup
		t.Cleanup(func() {
			if t.Failed() {
				logs, _ := filepath.Glob(filepath.Join(dir, "sup", "*.log"))
				for _, l := range logs {
					data, _ := os.ReadFile(l)
					t.Logf("%s:\n%s", l, data)
				}
			}
		})
	}
	// services first, the manager's connection last
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, id := range e.m.List() {
			_ = e.units.Remove(ctx, LVSServiceName(id))
		}
		e.units.Close()
	})
	netnsUnit := ""
	if systemd {
		netnsUnit = "amphora-netns"
	}
	common := Common{BasePath: e.base, Namespace: e.ns.Name, LogFacility: 2, Units: e.units, Agent: e.agent}
	e.vrrp = NewManager(Options{Common: common})
	common.NetnsUnit, common.Cmd = netnsUnit, keepalived
	e.m = NewLVSManager(LVSOptions{
		Common: common, Topology: func() string { return topology },
		VRRP: lvsEnvVRRP{e}, Advertiser: lvsEnvAdvertiser{e},
		Run: func(_ context.Context, argv ...string) ([]byte, error) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.ipvsadm = append(e.ipvsadm, argv)
			if e.ipvsErr != nil {
				return nil, e.ipvsErr
			}
			if slices.Contains(argv, "--stats") {
				return []byte(e.stats), nil
			}
			return []byte(e.plain), nil
		},
		KernelTable: func(pid int) ([]byte, error) {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
				return nil, err
			}
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.kernel == "" {
				return nil, errors.New("no kernel table")
			}
			return []byte(e.kernel), nil
		},
	})
	return e
}

// lvsEnvVRRP counts the refreshes of the VRRP check, then does it.
type lvsEnvVRRP struct{ e *lvsEnv }

func (v lvsEnvVRRP) ServicesChanged(ctx context.Context) {
	v.e.mu.Lock()
	v.e.refreshes++
	v.e.mu.Unlock()
	if err := v.e.vrrp.RefreshCheck(ctx); err != nil {
		v.e.t.Errorf("RefreshCheck: %v", err)
	}
}

// lvsEnvAdvertiser records the announcements.
type lvsEnvAdvertiser struct{ e *lvsEnv }

func (a lvsEnvAdvertiser) Announce(addrs []string) {
	a.e.mu.Lock()
	defer a.e.mu.Unlock()
	a.e.advertised = append(a.e.advertised, addrs)
}

func (e *lvsEnv) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	e.t.Cleanup(cancel)
	return ctx
}

// fake writes the stand-in keepalived and returns its path.
func fakeKeepalivedPath(t *testing.T) string {
	t.Helper()
	dir := testutil.ShortDir(t, "fk")
	p := filepath.Join(dir, "keepalived")
	if err := os.WriteFile(p, []byte(fakeKeepalived), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *lvsEnv) upload(id string, conf []byte) {
	e.t.Helper()
	sum, err := e.m.Upload(e.ctx(), testutil.DefaultAmphoraID, id, bytes.NewReader(conf))
	if err != nil {
		e.t.Fatalf("upload %s: %v", id, err)
	}
	if want := fsutil.MD5Hex(conf); sum != want {
		e.t.Errorf("upload md5 %s, want %s", sum, want)
	}
}

func (e *lvsEnv) status(id string) string {
	for _, l := range e.m.Listeners(e.ctx()) {
		if l.UUID == id {
			return l.Status + "/" + l.Type
		}
	}
	return "absent"
}

// runCheck runs a VRRP check script with bash, as keepalived does through
// check_script.sh, and returns its exit status.
func runCheck(t *testing.T, path string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := exec.CommandContext(ctx, "bash", path).Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	t.Fatal(err)
	return -1
}

func TestLVSLifecycleBuiltin(t *testing.T) { testLVSLifecycle(t, "builtin") }
func TestLVSLifecycleSystemd(t *testing.T) {
	testutil.RequireSystemd(t)
	testLVSLifecycle(t, "systemd")
}

// The life cycle of a UDP listener with virtual servers (stand-in
// keepalived, see fakeKeepalived) in ACTIVE_STANDBY: files, service,
// actions, statuses, the VRRP check scripts, the heartbeat data, delete.
func testLVSLifecycle(t *testing.T, manager string) {
	e := newLVSEnv(t, manager, fakeKeepalivedPath(t), "ACTIVE_STANDBY")
	ctx := e.ctx()
	p := e.m.Paths()
	vp := e.vrrp.Paths()
	s := newLVSSpec()
	conf := renderLVS(t, s.render(e.base, nil))
	id := s.listener

	if _, err := e.m.Config(id); !errors.Is(err, ErrListenerNotFound) {
		t.Errorf("config before upload: %v", err)
	}
	e.upload(id, conf)
	if got, err := e.m.Config(id); err != nil || !bytes.Equal(got, conf) {
		t.Errorf("stored configuration differs (%v)", err)
	}
	for path, mode := range map[string]os.FileMode{p.Config(id): 0o644, p.UDPCheckScript(): 0o755, vp.LVSCheckScript(): 0o755} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v mode %v, want %v", path, err, fi.Mode().Perm(), mode)
		}
	}
	script, _ := os.ReadFile(p.UDPCheckScript())
	if !strings.Contains(string(script), e.agent+" health-check udp -t 1 \"$1\" \"$2\"") {
		t.Errorf("udp_check.sh:\n%s", script)
	}
	if st, err := e.units.State(ctx, LVSServiceName(id)); err != nil || st.ActiveState != "inactive" {
		t.Errorf("service after upload: %v %v", st, err)
	}
	// uploaded, not started: no LVS keepalived must run, and without a
	// load balancer the haproxy check keeps failing (GAPS C4)
	if got, _ := os.ReadFile(vp.LVSCheckScript()); !strings.Contains(string(got), " lvs-check --; exit $?") {
		t.Errorf("lvs_udp_check.sh before start:\n%s", got)
	}
	if runCheck(t, vp.HAProxyCheckScript()) == 0 {
		t.Error("haproxy check passes without any running service")
	}
	if got := e.status(id); got != "OFFLINE/UDP" {
		t.Errorf("status before start %s", got)
	}

	// reload = restart, which starts a stopped listener (GAPS C7)
	details, err := e.m.Action(ctx, id, "RELOAD")
	if err != nil || details != "keepalivedlvs listener "+id+" restarted" {
		t.Fatalf("reload: %q %v", details, err)
	}
	pid1 := livePID(p.PIDFile(id))
	if pid1 == 0 {
		t.Fatal("keepalived not running after reload")
	}
	if got := e.status(id); got != "ACTIVE/UDP" {
		t.Errorf("status running %s", got)
	}
	if n := e.m.RunningCount(); n != 1 {
		t.Errorf("running count %d", n)
	}
	if _, err := os.Stat(vp.HAProxyCheckScript()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("haproxy check kept while only LVS listeners run: %v", err)
	}
	lvsScript, _ := os.ReadFile(vp.LVSCheckScript())
	if !strings.Contains(string(lvsScript), "lvs-check -- "+p.PIDFile(id)+"; exit $?") {
		t.Errorf("lvs_udp_check.sh:\n%s", lvsScript)
	}
	if got := runCheck(t, vp.LVSCheckScript()); got != 0 {
		t.Errorf("LVS check with keepalived running: exit %d", got)
	}
	e.mu.Lock()
	if len(e.advertised) != 0 {
		t.Errorf("advertised in ACTIVE_STANDBY")
	}
	e.mu.Unlock()

	// heartbeat data
	e.mu.Lock()
	e.plain, e.stats, e.kernel = ipvsadmPlain, ipvsadmStats, kernelTable
	e.ipvsadm = nil
	e.mu.Unlock()
	// the checker pid file is newer than the configuration: not restarting
	future := time.Now().Add(time.Second)
	if err := os.Chtimes(p.CheckersPIDFile(id), future, future); err != nil {
		t.Fatal(err)
	}
	rep, err := e.m.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := &LVSReport{
		Listeners: map[string]LVSListenerStats{id: {Status: "OPEN", InBytes: 2560, OutBytes: 3840, Conns: 16, ActiveConns: 6}},
		Pools: map[string]LVSPool{s.pool: {Status: "UP", Members: map[string]string{
			s.m1: "UP", s.m2: "MAINT", s.m3: "DRAIN"}}},
	}
	if diff := cmp.Diff(want, rep); diff != "" {
		t.Errorf("heartbeat data (-want +got):\n%s", diff)
	}
	e.mu.Lock()
	wantArgv := [][]string{
		{"/sbin/ip", "netns", "exec", e.ns.Name, "ipvsadm", "-Ln"},
		{"/sbin/ip", "netns", "exec", e.ns.Name, "ipvsadm", "-Ln", "--stats", "--exact"},
	}
	if diff := cmp.Diff(wantArgv, e.ipvsadm); diff != "" {
		t.Errorf("ipvsadm runs (-want +got):\n%s", diff)
	}
	e.mu.Unlock()

	// a missing checker pid file does not fail the heartbeat (GAPS E5):
	// absent members are RESTARTING
	if err := os.Remove(p.CheckersPIDFile(id)); err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	e.kernel = strings.Split(kernelTable, "UDP  [2001")[0] // member m3 gone
	e.mu.Unlock()
	rep, err = e.m.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Pools[s.pool].Members[s.m3]; got != "RESTARTING" {
		t.Errorf("absent member without checker pid file: %s", got)
	}
	// ipvsadm failing: the LVS part fails as a whole (the heartbeat is
	// still sent without it)
	e.mu.Lock()
	e.ipvsErr = errors.New("Can't initialize ipvs: Protocol not available")
	e.mu.Unlock()
	if _, err := e.m.Stats(ctx); err == nil || !strings.Contains(err.Error(), "IPVS statistics") {
		t.Errorf("ipvsadm failure: %v", err)
	}
	e.mu.Lock()
	e.ipvsErr = nil
	e.mu.Unlock()

	// restart gives a new keepalived
	if _, err := e.m.Action(ctx, id, "reload"); err != nil {
		t.Fatal(err)
	}
	pid2 := livePID(p.PIDFile(id))
	if pid2 == 0 || pid2 == pid1 {
		t.Errorf("restart: pid %d then %d", pid1, pid2)
	}
	if _, err := e.m.Action(ctx, id, "start"); err != nil {
		t.Fatal(err)
	}
	if livePID(p.PIDFile(id)) != pid2 {
		t.Error("start of a running listener restarted it")
	}
	for _, a := range []string{"restart", "bogus"} {
		if _, err := e.m.Action(ctx, id, a); !errors.Is(err, ErrUnknownAction) {
			t.Errorf("action %s: %v", a, err)
		}
	}
	if _, err := e.m.Action(ctx, testutil.NewUUID(), "start"); !errors.Is(err, ErrListenerNotFound) {
		t.Errorf("unknown listener: %v", err)
	}
	if _, err := e.m.Action(ctx, "../x", "start"); !errors.Is(err, ErrBadID) {
		t.Errorf("bad id: %v", err)
	}

	// stop: the listener leaves the VRRP check
	details, err = e.m.Action(ctx, id, "stop")
	if err != nil || details != "keepalivedlvs listener "+id+" stoped" {
		t.Fatalf("stop: %q %v", details, err)
	}
	if livePID(p.PIDFile(id)) != 0 {
		t.Error("keepalived still running after stop")
	}
	if got := e.status(id); got != "OFFLINE/UDP" {
		t.Errorf("status stopped %s", got)
	}
	if got, _ := os.ReadFile(vp.LVSCheckScript()); strings.Contains(string(got), p.PIDFile(id)) {
		t.Errorf("stopped listener still checked:\n%s", got)
	}
	if rep, err := e.m.Stats(ctx); err != nil || len(rep.Listeners) != 0 {
		t.Errorf("stopped listener in the heartbeat: %+v %v", rep, err)
	}

	// a second listener without pool runs next to it; then delete both
	bare := newLVSSpec()
	bareConf := renderLVS(t, bare.render(e.base, func(spec map[string]any) { listenerOf(spec)["pool"] = nil }))
	e.upload(bare.listener, bareConf)
	if _, err := e.m.Action(ctx, bare.listener, "start"); err != nil {
		t.Fatal(err)
	}
	if got := e.status(bare.listener); got != "OFFLINE/UDP" {
		t.Errorf("running listener without virtual server: %s", got)
	}
	if rep, err := e.m.Stats(ctx); err != nil || rep.Listeners[bare.listener] != (LVSListenerStats{Status: "OPEN"}) || len(rep.Pools) != 0 {
		t.Errorf("listener without pool in the heartbeat: %+v %v", rep, err)
	}
	if _, err := e.m.Action(ctx, id, "start"); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{p.Config(id), p.PIDFile(id), p.VRRPPIDFile(id), p.CheckersPIDFile(id)} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after delete: %v", f, err)
		}
	}
	if _, err := e.units.State(ctx, LVSServiceName(id)); !errors.Is(err, service.ErrNotFound) {
		t.Errorf("service left after delete: %v", err)
	}
	if got, _ := os.ReadFile(vp.LVSCheckScript()); strings.Contains(string(got), p.PIDFile(id)) ||
		!strings.Contains(string(got), p.PIDFile(bare.listener)) {
		t.Errorf("VRRP check not refreshed by the delete (GAPS C6):\n%s", got)
	}
	if err := e.m.Delete(ctx, id); err != nil {
		t.Errorf("second delete: %v", err)
	}
	// only stale pid files left by a crash (some of them, GAPS C6)
	if _, err := e.m.Action(ctx, bare.listener, "stop"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.CheckersPIDFile(bare.listener), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Delete(ctx, bare.listener); err != nil {
		t.Fatalf("delete with a stale checker pid file: %v", err)
	}
	if e.m.List() != nil {
		t.Errorf("listeners left: %v", e.m.List())
	}
	// no LVS listener left: its check goes, the haproxy check is back
	if _, err := os.Stat(vp.LVSCheckScript()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lvs_udp_check.sh left: %v", err)
	}
	if _, err := os.Stat(vp.HAProxyCheckScript()); err != nil {
		t.Errorf("haproxy check not restored: %v", err)
	}
	if e.unitDir != "" {
		if _, err := os.Stat(filepath.Join(e.unitDir, LVSServiceName(id)+".service")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("unit file left: %v", err)
		}
	}
}

// SINGLE topology: a start or restart advertises the VIPs of the
// virtual_server_group blocks; the VRRP check scripts are left alone.
func TestLVSSingleTopologyAdvertises(t *testing.T) {
	e := newLVSEnv(t, "builtin", fakeKeepalivedPath(t), "SINGLE")
	ctx := e.ctx()
	s := newLVSSpec()
	conf := renderLVS(t, s.render(e.base, nil))
	e.upload(s.listener, conf)
	for _, a := range []string{"start", "reload", "stop"} {
		if _, err := e.m.Action(ctx, s.listener, a); err != nil {
			t.Fatalf("%s: %v", a, err)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.advertised) != 2 {
		t.Fatalf("advertisements after start, reload, stop: %d, want 2", len(e.advertised))
	}
	want := []string{"198.51.100.10", "198.51.100.11", "2001:db8::10"}
	if diff := cmp.Diff(want, e.advertised[1]); diff != "" {
		t.Errorf("advertised addresses (-want +got):\n%s", diff)
	}
	if e.refreshes != 0 {
		t.Errorf("VRRP check refreshed %d times in SINGLE topology", e.refreshes)
	}
	if _, err := os.Stat(e.vrrp.Paths().LVSCheckScript()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lvs_udp_check.sh written in SINGLE topology: %v", err)
	}
}

// Uploads: ids must be UUIDs; a configuration keepalived refuses leaves
// the installed one (and the service) untouched.
func TestLVSUploadRefused(t *testing.T) {
	e := newLVSEnv(t, "builtin", DefaultCmd, "SINGLE")
	ctx := e.ctx()
	id := testutil.NewUUID()
	for _, ids := range [][2]string{{"x", id}, {testutil.DefaultAmphoraID, "../../etc"}} {
		if _, err := e.m.Upload(ctx, ids[0], ids[1], strings.NewReader("net_namespace x\n")); !errors.Is(err, ErrBadID) {
			t.Errorf("upload %v: %v", ids, err)
		}
	}
	good := renderLVS(t, newLVSSpec().render(e.base, nil))
	e.upload(id, good)
	var ve *ValidationError
	_, err := e.m.Upload(ctx, testutil.DefaultAmphoraID, id, strings.NewReader("net_namespace amphora-haproxy\nbogus_keyword 1\n"))
	if !errors.As(err, &ve) || !strings.Contains(ve.Output, "Unknown keyword 'bogus_keyword'") {
		t.Fatalf("bad configuration: %v", err)
	}
	p := e.m.Paths()
	if got, _ := os.ReadFile(p.Config(id)); !bytes.Equal(got, good) {
		t.Error("installed configuration changed by a refused upload")
	}
	if _, err := os.Stat(p.Config(id) + ".new-failed"); err != nil {
		t.Errorf("refused configuration not kept: %v", err)
	}
	e.upload(id, good)
	if _, err := os.Stat(p.Config(id) + ".new-failed"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale refused configuration kept after a good upload: %v", err)
	}
	if got := e.m.List(); !slices.Equal(got, []string{id}) {
		t.Errorf("list %v", got)
	}
}

// The real keepalived: a listener without virtual server runs on this
// kernel (keepalived has nothing to program); one with virtual servers
// cannot (no IPVS), and the service manager's report comes back as the
// action's failure.
func TestLVSRealKeepalived(t *testing.T) {
	e := newLVSEnv(t, "builtin", DefaultCmd, "SINGLE")
	ctx := e.ctx()
	p := e.m.Paths()
	bare := newLVSSpec()
	e.upload(bare.listener, renderLVS(t, bare.render(e.base, func(spec map[string]any) { listenerOf(spec)["pool"] = nil })))
	// A crash or a hard reset leaves pid files behind, and their pids may
	// name other live processes by now: keepalived would refuse to start
	// ("daemon is already running") were they not removed first.
	for _, f := range []string{p.PIDFile(bare.listener), p.CheckersPIDFile(bare.listener)} {
		if err := os.WriteFile(f, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.m.Action(ctx, bare.listener, "reload"); err != nil {
		t.Fatalf("start keepalived without virtual server: %v", err)
	}
	pid := livePID(p.PIDFile(bare.listener))
	if pid == 0 {
		t.Fatal("keepalived not running")
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	for _, arg := range []string{"--namespace=" + e.ns.Name, "--check", "-n", p.Config(bare.listener)} {
		if !bytes.Contains(cmdline, []byte(arg+"\x00")) {
			t.Errorf("keepalived command line lacks %q: %q", arg, cmdline)
		}
	}
	// the configuration says net_namespace amphora-haproxy; --namespace
	// puts keepalived in the agent's namespace
	self, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	want, _ := os.Stat(e.ns.Path())
	if st, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid)); err != nil || !os.SameFile(st, want) {
		t.Errorf("keepalived runs in netns %s, not %s", self, e.ns.Name)
	}
	if got := e.status(bare.listener); got != "OFFLINE/UDP" {
		t.Errorf("status %s", got)
	}
	if n := e.m.RunningCount(); n != 1 {
		t.Errorf("running count %d", n)
	}
	rep, err := e.m.Stats(ctx)
	if err != nil || rep.Listeners[bare.listener] != (LVSListenerStats{Status: "OPEN"}) {
		t.Errorf("heartbeat data: %+v %v", rep, err)
	}
	e.mu.Lock()
	if len(e.ipvsadm) != 0 {
		t.Errorf("ipvsadm run for a listener without virtual server: %v", e.ipvsadm)
	}
	e.mu.Unlock()

	s := newLVSSpec()
	e.upload(s.listener, renderLVS(t, s.render(e.base, nil)))
	_, err = e.m.Action(ctx, s.listener, "reload")
	var ae *service.ActionError
	if !errors.As(err, &ae) || ae.Message != "Failed to restart keepalivedlvs listener "+s.listener {
		t.Fatalf("start with virtual servers without IPVS: %v", err)
	}
	if !strings.Contains(strings.ToLower(ae.Err.Error()), "ipvs") {
		t.Errorf("the failure report does not show keepalived's complaint: %v", ae.Err)
	}
	testutil.WaitFor(e.t, 10*time.Second, testutil.Holds("status ERROR", func() bool { return e.status(s.listener) == "ERROR/UDP" }))
	if err := e.m.Delete(ctx, s.listener); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Delete(ctx, bare.listener); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(e.t, 10*time.Second, testutil.Holds("keepalived gone", func() bool { return syscall.Kill(pid, 0) != nil }))
}

// lvs-check's verdict: every pid file must name a live keepalived.
func TestCheckLVS(t *testing.T) {
	dir := t.TempDir()
	fake := fakeKeepalivedPath(t)
	conf := filepath.Join(dir, "c.conf")
	if err := os.WriteFile(conf, []byte("net_namespace x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pidf, chkf := filepath.Join(dir, "k.pid"), filepath.Join(dir, "k.check.pid")
	cmd := exec.Command(fake, "-n", "-f", conf, "-p", pidf, "-c", chkf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for livePID(pidf) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("stand-in keepalived did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The stand-in's checker is a forked bash (named keepalived) until it
	// execs sleep: wait for that, or the check pid file is, for a moment,
	// rightly counted as a keepalived.
	for {
		data, _ := os.ReadFile(chkf)
		comm, _ := os.ReadFile("/proc/" + strings.TrimSpace(string(data)) + "/comm")
		if strings.TrimSpace(string(comm)) == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("stand-in keepalived's checker did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	notKeepalived := filepath.Join(dir, "sleep.pid")
	if err := os.WriteFile(notKeepalived, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CheckLVS(nil); err != nil {
		t.Errorf("no pid file: %v", err)
	}
	if err := CheckLVS([]string{pidf}); err != nil {
		t.Errorf("running: %v", err)
	}
	for _, bad := range []string{filepath.Join(dir, "missing.pid"), notKeepalived, chkf} {
		if err := CheckLVS([]string{pidf, bad}); err == nil {
			t.Errorf("%s counted as a running keepalived", bad)
		}
	}
}

// With LVS listeners governing (no load balancer), an agent restart must
// not bring back the failing haproxy check.
func TestVRRPReconcileKeepsLVSDecision(t *testing.T) {
	e := newLVSEnv(t, "builtin", fakeKeepalivedPath(t), "ACTIVE_STANDBY")
	ctx := e.ctx()
	vp := e.vrrp.Paths()
	if err := os.MkdirAll(vp.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vp.Config(), []byte("# uploaded\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newLVSSpec()
	e.upload(s.listener, renderLVS(t, s.render(e.base, nil)))
	if _, err := e.m.Action(ctx, s.listener, "start"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(vp.HAProxyCheckScript()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("haproxy check present: %v", err)
	}
	e.vrrp.Reconcile(ctx)
	if _, err := os.Stat(vp.HAProxyCheckScript()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("haproxy check restored at start-up: %v", err)
	}
	if got := runCheck(t, vp.CheckScript()); got != 0 {
		t.Errorf("check_script.sh with the LVS listener running: exit %d", got)
	}
}

func TestLVSService(t *testing.T) {
	id := testutil.NewUUID()
	p := LVSPaths{Dir: "/var/lib/octavia/lvs"}
	svc, err := LVSUnitParams{ListenerID: id, Cmd: "/usr/sbin/keepalived", IPCmd: "/sbin/ip",
		Namespace: "amphora-haproxy", Netns: "amphora-netns", LogFacility: 1, Paths: p}.Service()
	if err != nil {
		t.Fatal(err)
	}
	base := "/var/lib/octavia/lvs/octavia-keepalivedlvs-" + id
	for _, line := range []string{
		"Requires=amphora-netns.service",
		"After=network-online.target amphora-netns.service",
		"Type=forking",
		"KillMode=process",
		"ExecStart=/sbin/ip netns exec amphora-haproxy /usr/sbin/keepalived --log-facility=1 --namespace=amphora-haproxy --check -f " +
			base + ".conf -p " + base + ".pid -r " + base + ".vrrp.pid -c " + base + ".check.pid",
		"ExecStartPre=-/bin/rm -f " + base + ".pid " + base + ".vrrp.pid " + base + ".check.pid",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"PIDFile=" + base + ".pid",
		"WantedBy=multi-user.target",
	} {
		if !strings.Contains(string(svc.Unit), "\n"+line+"\n") {
			t.Errorf("unit lacks %q:\n%s", line, svc.Unit)
		}
	}
	wantArgv := []string{"/sbin/ip", "netns", "exec", "amphora-haproxy", "/usr/sbin/keepalived", "-n", "-l",
		"--log-facility=1", "--namespace=amphora-haproxy", "--check", "-f", base + ".conf", "-p", base + ".pid",
		"-r", base + ".vrrp.pid", "-c", base + ".check.pid"}
	if diff := cmp.Diff(wantArgv, svc.Argv); diff != "" {
		t.Errorf("argv (-want +got):\n%s", diff)
	}
	if svc.Name != "octavia-keepalivedlvs-"+id || svc.PIDFile != base+".pid" || svc.ReloadSignal != syscall.SIGHUP {
		t.Errorf("service %+v", svc)
	}
	if diff := cmp.Diff([]string{base + ".vrrp.pid", base + ".check.pid"}, svc.ChildPIDFiles); diff != "" {
		t.Errorf("child pid files (-want +got):\n%s", diff)
	}
	if _, err := (LVSUnitParams{ListenerID: "../x", Cmd: "k", IPCmd: "ip", Namespace: "n", Paths: p}).Service(); err == nil {
		t.Error("bad listener id rendered")
	}
}
