package main

// Crash consistency under fault injection: the agent is killed with
// SIGKILL at random points of a stream of uploads, certificate uploads,
// plugs, VRRP uploads, agent configuration updates, starts, stops and
// deletes, started again, and the invariants are checked after every
// restart.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/internal/procfs"
	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// absent stands for "no such file" among a file's acceptable contents.
const absent = "\x00absent"

// ckVRRP is the VRRP configuration the controller renders for a MASTER
// (BASE is the agent's base_path); versions differ by priority.
const ckVRRP = `vrrp_script check_script {
    script BASE/vrrp/check_script.sh
    interval 5
    fall 2
    rise 2
}

vrrp_instance 11111111222243338444555555555555 {
    state MASTER
    interface eth1
    virtual_router_id 1
    priority PRIO
    nopreempt
    accept
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass vrrppass
    }
    unicast_src_ip 198.51.100.4
    unicast_peer {
        198.51.100.5
    }
    virtual_ipaddress {
        198.51.100.100
    }
    track_script {
        check_script
    }
}
`

// ckMember is one member-network NIC and the two address plans a plug
// alternates between (the second plug of a NIC is an update that
// replaces its addresses).
type ckMember struct {
	mac   string
	plans [2]map[string]any
}

// ckOp is one operation of the stream.
type ckOp struct {
	desc   string
	method string
	path   string
	body   []byte
	// effects on files: path -> content once the operation is done
	// (absent: removed)
	files map[string]string
	// running: the load balancer's haproxy runs afterwards (nil: no change)
	lb      string
	running *bool
	okCodes []int
}

type ckEnv struct {
	t       *testing.T
	a       *testutil.Agent
	dp      string
	client  *http.Client
	rng     *rand.Rand
	lbs     []string
	lbCfg   map[string]string
	vipMAC  string
	vip     bool // plugged
	members []*ckMember
	confDoc string
	version int

	// acked: path -> the content the last acknowledged operation left;
	// pending: the operation in flight when the agent was killed
	acked   map[string]string
	running map[string]bool // lb -> acknowledged state ("absent": not there)
	pending *ckOp
}

func (e *ckEnv) next() int { e.version++; return e.version }

func boolp(b bool) *bool { return &b }

func (e *ckEnv) lbConfigPath(lb string) string { return filepath.Join(e.a.BasePath, lb, "haproxy.cfg") }
func (e *ckEnv) certPath(lb, name string) string {
	return filepath.Join(e.a.CertDir, lb, name)
}

// pick returns the next operation, at random.
func (e *ckEnv) pick() *ckOp {
	lb := e.lbs[e.rng.IntN(len(e.lbs))]
	cfgPath := e.lbConfigPath(lb)
	exists := e.acked[cfgPath] != "" && e.acked[cfgPath] != absent
	switch n := e.rng.IntN(100); {
	case n < 22 || !exists && n < 45:
		v := e.next()
		cfg := e.lbCfg[lb] + fmt.Sprintf("# revision %d\n", v)
		return &ckOp{desc: fmt.Sprintf("upload %s r%d", lb[:8], v), method: http.MethodPut,
			path: "/1.0/loadbalancer/" + e.a.AmphoraID + "/" + lb + "/haproxy", body: []byte(cfg),
			files: map[string]string{cfgPath: cfg}, okCodes: []int{202}}
	case n < 36 && !exists:
		return e.pick() // nothing to start or stop yet
	case n < 32:
		action := []string{"start", "reload"}[e.rng.IntN(2)]
		return &ckOp{desc: action + " " + lb[:8], method: http.MethodPut, path: "/1.0/loadbalancer/" + lb + "/" + action,
			lb: lb, running: boolp(true), okCodes: []int{202}}
	case n < 36:
		return &ckOp{desc: "stop " + lb[:8], method: http.MethodPut, path: "/1.0/loadbalancer/" + lb + "/stop",
			lb: lb, running: boolp(false), okCodes: []int{202}}
	case n < 42:
		files := map[string]string{cfgPath: absent}
		for p := range e.acked {
			if strings.HasPrefix(p, filepath.Join(e.a.CertDir, lb)+"/") {
				files[p] = absent
			}
		}
		return &ckOp{desc: "delete " + lb[:8], method: http.MethodDelete, path: "/1.0/listeners/" + lb,
			files: files, lb: lb, running: boolp(false), okCodes: []int{200}}
	case n < 60:
		name := []string{"server.pem", "client_ca.pem"}[e.rng.IntN(2)]
		v := e.next()
		// a certificate bundle of 64-256 KiB, so that a write takes a while
		var b bytes.Buffer
		fmt.Fprintf(&b, "-----BEGIN CERTIFICATE-----\n# %s r%d\n", name, v)
		line := strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo", 2)[:64] + "\n"
		for i, size := 0, 64<<10+e.rng.IntN(192<<10); i < size; i += len(line) {
			b.WriteString(line)
		}
		b.WriteString("-----END CERTIFICATE-----\n")
		return &ckOp{desc: fmt.Sprintf("certificate %s/%s r%d", lb[:8], name, v), method: http.MethodPut,
			path: "/1.0/loadbalancer/" + lb + "/certificates/" + name, body: b.Bytes(),
			files: map[string]string{e.certPath(lb, name): b.String()}, okCodes: []int{200}}
	case n < 65:
		name := []string{"server.pem", "client_ca.pem"}[e.rng.IntN(2)]
		return &ckOp{desc: "delete certificate " + lb[:8] + "/" + name, method: http.MethodDelete,
			path:  "/1.0/loadbalancer/" + lb + "/certificates/" + name,
			files: map[string]string{e.certPath(lb, name): absent}, okCodes: []int{200}}
	case n < 74:
		if !e.vip {
			body, _ := json.Marshal(nwNetInfo(e.vipMAC))
			return &ckOp{desc: "plug VIP", method: http.MethodPost, path: "/1.0/plug/vip/" + nwVIP4, body: body, okCodes: []int{202, 409}}
		}
		m := e.members[e.rng.IntN(len(e.members))]
		plan := e.rng.IntN(2)
		body, _ := json.Marshal(m.plans[plan])
		return &ckOp{desc: fmt.Sprintf("plug member %s plan %d", m.mac, plan), method: http.MethodPost, path: "/1.0/plug/network",
			body: body, okCodes: []int{202}}
	case n < 90:
		v := e.next()
		cfg := strings.ReplaceAll(strings.ReplaceAll(ckVRRP, "BASE", e.a.BasePath), "PRIO", strconv.Itoa(1+v%250))
		return &ckOp{desc: fmt.Sprintf("VRRP upload r%d", v), method: http.MethodPut, path: "/1.0/vrrp/upload", body: []byte(cfg),
			files: map[string]string{filepath.Join(e.a.BasePath, "vrrp", "octavia-keepalived.conf"): cfg}, okCodes: []int{200}}
	default:
		v := e.next()
		doc := strings.Replace(e.confDoc, "heartbeat_key = insecure", fmt.Sprintf("heartbeat_key = key-%d", v), 1)
		return &ckOp{desc: fmt.Sprintf("agent configuration r%d", v), method: http.MethodPut, path: "/1.0/config", body: []byte(doc),
			files: map[string]string{e.a.ConfigFile: doc}, okCodes: []int{202}}
	}
}

// kind is the kind of operation, for the figures.
func (op *ckOp) kind() string {
	f := strings.Fields(op.desc)
	switch {
	case len(f) > 1 && f[0] == "delete" && f[1] == "certificate":
		return "delete-certificate"
	case f[0] == "VRRP" || f[0] == "agent":
		return f[0] + "-" + f[1]
	}
	return f[0]
}

// do sends one operation; answered is false when the agent did not
// answer (it was killed).
func (e *ckEnv) do(op *ckOp) (code int, body string, answered bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, op.method, e.a.URL(op.path), bytes.NewReader(op.body))
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return 0, err.Error(), false
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err.Error(), false
	}
	return resp.StatusCode, string(b), true
}

// ckStats are the figures of the run.
type ckStats struct {
	rounds, done, interrupted, tempsRemoved int
	doneBy, interruptedBy                   map[string]int
	maxStart                                time.Duration
}

// TestCrashConsistency kills the agent with SIGKILL at random points of a
// stream of operations, 50 times (10 with -short), and checks after each
// restart: every stored file is the old or the new version, complete;
// every load balancer configuration passes haproxy -c; the services
// match the configurations; haproxy runs where it should; no temporary
// file is left; the namespace matches the interface files.
func TestCrashConsistency(t *testing.T) {
	testutil.RequireNetAdmin(t)
	testutil.RequireRenderer(t)
	testutil.RequireBinary(t, "haproxy")
	testutil.RequireBinary(t, "keepalived")
	rounds := 50
	if testing.Short() {
		rounds = 10
	}
	if s := os.Getenv("AMPHORA_CRASH_ROUNDS"); s != "" {
		rounds, _ = strconv.Atoi(s)
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("AMPHORA_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (AMPHORA_CRASH_SEED repeats the run), %d rounds", seed, rounds)

	dir := testutil.ShortDir(t, "ck")
	e := &ckEnv{t: t, dp: "ck-dp-" + testutil.RandomSuffix(4), rng: rand.New(rand.NewPCG(seed, 13)),
		vipMAC: testutil.NeutronMAC(), acked: map[string]string{}, running: map[string]bool{}, lbCfg: map[string]string{}}
	vnet := testutil.NewNetNS(t, "ck-vip")
	testutil.Hotplug(t, "ckh", e.vipMAC, vnet, "vip0")
	mnet := testutil.NewNetNS(t, "ck-mem")
	for i := range 2 {
		m := &ckMember{mac: testutil.NeutronMAC()}
		testutil.Hotplug(t, "ckh", m.mac, mnet, fmt.Sprintf("mem%d", i))
		net4 := fmt.Sprintf("198.18.%d", 2+i)
		m.plans[0] = map[string]any{"mac_address": m.mac, "mtu": 1400, "fixed_ips": []any{
			map[string]any{"ip_address": net4 + ".11", "subnet_cidr": net4 + ".0/24", "gateway": nil,
				"host_routes": []any{map[string]any{"nexthop": net4 + ".254", "destination": fmt.Sprintf("198.18.%d.0/24", 90+i)}}},
		}}
		m.plans[1] = map[string]any{"mac_address": m.mac, "mtu": 1500, "fixed_ips": []any{
			map[string]any{"ip_address": net4 + ".12", "subnet_cidr": net4 + ".0/24", "gateway": nil, "host_routes": []any{}},
			map[string]any{"ip_address": fmt.Sprintf("2001:db8:%d::12", 200+i), "subnet_cidr": fmt.Sprintf("2001:db8:%d::/64", 200+i), "gateway": nil, "host_routes": []any{}},
		}}
		e.members = append(e.members, m)
	}
	nwDataPlaneCleanup(t, e.dp)
	e.a = testutil.StartAgent(t, testutil.Options{
		Dir: dir,
		Options: map[string]string{
			"amphora_agent/network_namespace":         e.dp,
			"amphora_agent/service_manager":           "builtin",
			"amphora_agent/haproxy_user_group_config": filepath.Join(dir, "haproxy-default-user-group.conf"),
		},
	})
	e.client = &http.Client{Timeout: 60 * time.Second,
		Transport: &http.Transport{TLSClientConfig: e.a.TLSConfig(e.a.PKI.ClientPEM), DisableKeepAlives: true}}
	conf, err := os.ReadFile(e.a.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	e.confDoc = string(conf)
	e.acked[e.a.ConfigFile] = e.confDoc
	e.lbs = []string{testutil.NewUUID(), testutil.NewUUID()}
	var specs []testutil.RenderSpec
	noMonitor := false
	for i, lb := range e.lbs {
		specs = append(specs, e.a.RenderSpec(lb, nwVIP4, testutil.RenderListener{
			ID: testutil.NewUUID(), Protocol: "HTTP", Port: 80 + i, PoolID: testutil.NewUUID(), Monitor: &noMonitor,
			Members: []testutil.RenderMember{{ID: testutil.NewUUID(), Address: "198.18.2.21", Port: 8081}},
		}))
	}
	for i, cfg := range testutil.Render(t, specs...) {
		e.lbCfg[e.lbs[i]] = cfg
		e.acked[e.lbConfigPath(e.lbs[i])] = absent
		for _, name := range []string{"server.pem", "client_ca.pem"} {
			e.acked[e.certPath(e.lbs[i], name)] = absent
		}
	}
	e.acked[filepath.Join(e.a.BasePath, "vrrp", "octavia-keepalived.conf")] = absent

	st := ckStats{doneBy: map[string]int{}, interruptedBy: map[string]int{}}
	for round := 1; round <= rounds; round++ {
		var log []string
		// A third of the kills land at a random time of the stream; the
		// others right after the n-th change of a directory the agent
		// writes in (a temporary file created, renamed, a file removed),
		// where a crash hurts.
		targeted := e.rng.IntN(3) > 0
		nth := 1 + e.rng.IntN(8)
		delay := time.Duration(e.rng.IntN(2000)) * time.Microsecond
		if !targeted {
			delay = time.Duration(50+e.rng.IntN(1450)) * time.Millisecond
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				op := e.pick()
				mu.Lock()
				e.pending = op
				mu.Unlock()
				code, body, answered := e.do(op)
				mu.Lock()
				if !answered {
					log = append(log, op.desc+": interrupted ("+body+")")
					mu.Unlock()
					return // the agent is gone; op stays pending
				}
				e.pending = nil
				log = append(log, fmt.Sprintf("%s: %d", op.desc, code))
				if !slices.Contains(op.okCodes, code) {
					mu.Unlock()
					t.Errorf("round %d: %s answered %d %s", round, op.desc, code, body)
					return
				}
				e.apply(op, code)
				st.done++
				st.doneBy[op.kind()]++
				mu.Unlock()
			}
		})
		if targeted {
			e.awaitChanges(nth, 30*time.Second)
		}
		time.Sleep(delay)
		e.a.Kill()
		close(stop)
		wg.Wait()
		if t.Failed() {
			t.Fatalf("round %d operations:\n%s\nagent log:\n%s", round, strings.Join(log, "\n"), tail(e.a.Log(), 6000))
		}
		killPoint := fmt.Sprintf("at %v", delay)
		if targeted {
			killPoint = fmt.Sprintf("%v after the %d. change of a directory", delay, nth)
		}
		interrupted, doneInRound := "nothing in flight", len(log)
		if e.pending != nil {
			doneInRound--
			st.interrupted++
			st.interruptedBy[e.pending.kind()]++
			interrupted = e.pending.desc
		}
		t.Logf("round %2d: SIGKILL %s, %d operations done, interrupted: %s", round, killPoint, doneInRound, interrupted)
		began := time.Now()
		e.a.Start()
		st.maxStart = max(st.maxStart, time.Since(began))
		st.rounds++
		if problems := e.check(); len(problems) > 0 {
			t.Fatalf("round %d: invariants broken after the restart:\n  %s\noperations of the round:\n  %s\nagent log:\n%s",
				round, strings.Join(problems, "\n  "), strings.Join(log, "\n  "), tail(e.a.Log(), 8000))
		}
	}
	st.tempsRemoved = strings.Count(e.a.Log(), "of interrupted writes removed") + strings.Count(e.a.Log(), "whose upload was interrupted")
	t.Logf("crash consistency: %d rounds, %d operations completed %v, %d interrupted by SIGKILL %v, slowest restart %v, %d clean-ups of interrupted writes at start-up; every invariant held after every restart",
		st.rounds, st.done, st.doneBy, st.interrupted, st.interruptedBy, st.maxStart.Round(time.Millisecond), st.tempsRemoved)
}

// awaitChanges returns after n changes of the directories the agent
// writes in (or the timeout), polling their modification times.
func (e *ckEnv) awaitChanges(n int, timeout time.Duration) {
	dirs := []string{e.a.BasePath, filepath.Join(e.a.Dir, "interfaces"), filepath.Join(e.a.BasePath, "vrrp"),
		filepath.Join(e.a.BasePath, "supervisor"), filepath.Dir(e.a.ConfigFile)}
	for _, lb := range e.lbs {
		dirs = append(dirs, filepath.Join(e.a.BasePath, lb), filepath.Join(e.a.CertDir, lb))
	}
	stamp := func() []int64 {
		out := make([]int64, len(dirs))
		for i, d := range dirs {
			if fi, err := os.Stat(d); err == nil {
				out[i] = fi.ModTime().UnixNano()
			}
		}
		return out
	}
	last := stamp()
	deadline := time.Now().Add(timeout)
	for seen := 0; seen < n && time.Now().Before(deadline); {
		time.Sleep(200 * time.Microsecond)
		now := stamp()
		if !slices.Equal(now, last) {
			seen++
			last = now
		}
	}
}

// apply records what an acknowledged operation did.
func (e *ckEnv) apply(op *ckOp, code int) {
	for p, c := range op.files {
		e.acked[p] = c
	}
	if op.running != nil {
		e.running[op.lb] = *op.running
	}
	if op.path == "/1.0/plug/vip/"+nwVIP4 {
		e.vip = true
	}
	_ = code
}

// check verifies the invariants and then takes what it observed as the
// acknowledged state (an interrupted operation may or may not have
// happened).
func (e *ckEnv) check() []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	pend := map[string]string{}
	if e.pending != nil {
		pend = e.pending.files
	}
	// 1. every stored file is the old or the new version, complete
	for p, want := range e.acked {
		got := absent
		if b, err := os.ReadFile(p); err == nil {
			got = string(b)
		}
		ok := got == want
		if alt, in := pend[p]; in && got == alt {
			ok = true
		}
		if !ok {
			bad("%s: neither the acknowledged nor the in-flight version (%d bytes: %.80q)", p, len(got), got)
		}
		e.acked[p] = got
	}
	// 2. every load balancer configuration passes haproxy -c
	peer := haproxy.PeerName(e.a.AmphoraID)
	ug := filepath.Join(e.a.Dir, "haproxy-default-user-group.conf")
	for _, lb := range e.lbs {
		cfg := e.lbConfigPath(lb)
		if _, err := os.Stat(cfg); err != nil {
			continue
		}
		if out, err := exec.Command("haproxy", "-c", "-q", "-L", peer, "-f", cfg, "-f", ug).CombinedOutput(); err != nil {
			bad("haproxy -c %s: %v\n%s", cfg, err, out)
		}
	}
	// 3. services match configurations
	sup := filepath.Join(e.a.BasePath, "supervisor")
	for _, lb := range e.lbs {
		spec, specErr := os.ReadFile(filepath.Join(sup, "haproxy-"+lb+".json"))
		_, cfgErr := os.Stat(e.lbConfigPath(lb))
		switch {
		case cfgErr == nil && specErr != nil:
			bad("load balancer %s has a configuration but no service: %v", lb, specErr)
		case cfgErr != nil && specErr == nil:
			bad("load balancer %s has a service but no configuration", lb)
		case cfgErr == nil && !bytes.Contains(spec, []byte(e.lbConfigPath(lb))):
			bad("the service of %s does not run its configuration:\n%s", lb, spec)
		}
	}
	_, vrrpErr := os.Stat(filepath.Join(e.a.BasePath, "vrrp", "octavia-keepalived.conf"))
	_, vrrpSpecErr := os.Stat(filepath.Join(sup, "octavia-keepalived.json"))
	if (vrrpErr == nil) != (vrrpSpecErr == nil) {
		bad("VRRP configuration present %v, its service present %v", vrrpErr == nil, vrrpSpecErr == nil)
	}
	// 4. haproxy runs where it should: the acknowledged state, and the
	// supervisor's desired state, which survives the agent
	uncertain := ""
	if e.pending != nil {
		uncertain = e.pending.lb
	}
	for _, lb := range e.lbs {
		var desired struct {
			Desired string `json:"desired"`
		}
		spec, err := os.ReadFile(filepath.Join(sup, "haproxy-"+lb+".json"))
		want, known := false, false
		if err == nil {
			if jerr := json.Unmarshal(spec, &desired); jerr != nil {
				bad("the service of %s is damaged: %v", lb, jerr)
			} else {
				want, known = desired.Desired == "started", true
			}
		}
		if acked, ok := e.running[lb]; ok && lb != uncertain && known && acked != want {
			bad("load balancer %s: acknowledged running=%v, service desired %q", lb, acked, desired.Desired)
		}
		if !known {
			e.running[lb] = false
			continue
		}
		pidFile := filepath.Join(e.a.BasePath, lb, lb+".pid")
		runs := func() bool {
			pid := procfs.ReadPID(pidFile)
			if !procfs.Alive(pid) {
				return false
			}
			argv, err := procfs.Cmdline(pid)
			return err == nil && slices.Contains(argv, e.lbConfigPath(lb))
		}
		deadline := time.Now().Add(20 * time.Second)
		for runs() != want && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if runs() != want {
			bad("load balancer %s: haproxy running %v, desired %v", lb, runs(), want)
		}
		e.running[lb] = want
	}
	// 5. no temporary or staged file is left
	_ = filepath.WalkDir(e.a.Dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		// the agent writes no dot file: any is a temporary file
		if _, ok := fsutil.TempTarget(d.Name()); ok || strings.HasPrefix(d.Name(), ".") ||
			strings.HasSuffix(d.Name(), fsutil.StagedSuffix) || strings.HasSuffix(d.Name(), ".new-check") {
			bad("left behind: %s", p)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(e.a.BasePath, "plugged_interfaces.converge")); err == nil {
		bad("a plug mark is left after the restore")
	}
	// 6. the namespace matches the interface files
	problems = append(problems, e.checkNamespace()...)
	e.pending = nil
	return problems
}

// ifaceFile is what the check reads of an interface file.
type ifaceFile struct {
	Name      string `json:"name"`
	Addresses []struct {
		Address      string `json:"address"`
		Prefixlen    int    `json:"prefixlen"`
		OctaviaOwned *bool  `json:"octavia_owned"`
	} `json:"addresses"`
	Routes []struct {
		Dst     string `json:"dst"`
		Gateway string `json:"gateway"`
		Prefsrc string `json:"prefsrc"`
		Table   int    `json:"table"`
	} `json:"routes"`
	Rules []struct {
		Src    string `json:"src"`
		SrcLen int    `json:"src_len"`
		Table  int    `json:"table"`
	} `json:"rules"`
}

func normPrefix(s string) string {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked().String()
	}
	return s
}

func normAddr(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.String()
	}
	return s
}

// checkNamespace compares the namespace with the interface files: each
// file's link exists and is up, has exactly the file's addresses (no
// stale ones, none missing), the static routes of the link are routes of
// the file and every gateway route of the file is there, the source rules
// are exactly the files' rules; every plugged NIC is in the namespace
// under its recorded name.
func (e *ckEnv) checkNamespace() []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	h := nwHandle(e.t, e.dp)
	paths, _ := filepath.Glob(filepath.Join(e.a.Dir, "interfaces", "*.json"))
	var wantRules []string
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			bad("%s: %v", p, err)
			continue
		}
		var f ifaceFile
		if err := json.Unmarshal(data, &f); err != nil {
			bad("%s does not parse: %v", p, err)
			continue
		}
		l, err := h.LinkByName(f.Name)
		if err != nil {
			bad("interface file %s but no link: %v", f.Name, err)
			continue
		}
		if l.Attrs().Flags&1 == 0 {
			bad("%s is down", f.Name)
		}
		var want []string
		for _, a := range f.Addresses {
			if a.Address != "" && (a.OctaviaOwned == nil || *a.OctaviaOwned) {
				want = append(want, netip.PrefixFrom(netip.MustParseAddr(normAddr(a.Address)), a.Prefixlen).String())
			}
		}
		if f.Name == "lo" {
			want = append(want, "::1/128")
		}
		sort.Strings(want)
		if got := testutil.LinkAddrs(e.t, h, f.Name); !slices.Equal(got, want) {
			bad("%s addresses %v, its file says %v", f.Name, got, want)
		}
		fileRoutes := map[string]bool{}
		for _, r := range f.Routes {
			s := normPrefix(r.Dst)
			if r.Gateway != "" {
				s += " via " + normAddr(r.Gateway)
			}
			if r.Prefsrc != "" {
				s += " src " + normAddr(r.Prefsrc)
			}
			table := r.Table
			if table == 0 {
				table = 254
			}
			s += fmt.Sprintf(" table %d", table)
			fileRoutes[s] = true
		}
		static := testutil.StaticRoutes(e.t, h, f.Name)
		for _, r := range static {
			if !fileRoutes[r] {
				bad("%s: static route %q is not in its file", f.Name, r)
			}
		}
		for r := range fileRoutes {
			if strings.Contains(r, " via ") && !slices.Contains(static, r) {
				bad("%s: route %q of its file is missing", f.Name, r)
			}
		}
		for _, r := range f.Rules {
			table := r.Table
			if table == 0 {
				table = 254
			}
			wantRules = append(wantRules, fmt.Sprintf("from %s lookup %d prio 32000 proto 4",
				netip.PrefixFrom(netip.MustParseAddr(normAddr(r.Src)), r.SrcLen), table))
		}
	}
	sort.Strings(wantRules)
	if got := testutil.SourceRules(e.t, h); !slices.Equal(got, wantRules) {
		bad("source rules %v, the files say %v", got, wantRules)
	}
	plugged, _ := os.ReadFile(filepath.Join(e.a.BasePath, "plugged_interfaces"))
	for _, line := range strings.Split(strings.TrimSpace(string(plugged)), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		l, err := h.LinkByName(f[1])
		if err != nil || !strings.EqualFold(l.Attrs().HardwareAddr.String(), f[0]) {
			bad("plugged NIC %s is not %s in the namespace: %v", f[0], f[1], err)
		}
		if f[0] == e.vipMAC {
			e.vip = true
		}
	}
	return problems
}
