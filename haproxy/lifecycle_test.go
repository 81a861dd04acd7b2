package haproxy_test

// End-to-end tests of the haproxy load-balancer life cycle through the
// real agent binary: real haproxy in a real data-plane network namespace,
// a client and two member HTTP servers in another namespace, configs
// rendered by the Octavia controller's own templater and driven by its
// own REST client, under the builtin supervisor and under a real systemd
// (user) manager.
//
// Topology of every test (all addresses live inside namespaces the test
// creates; nothing is added to the root namespace):
//
//	hl-dp-<rand>  (agent's network_namespace)      hl-net-<rand>
//	  eth1 198.51.100.10/24 (VIP)  <--veth-->  c0 198.51.100.2/24 (client)
//	  eth2 198.18.2.1/24           <--veth-->  m0 198.18.2.21/24 member1 :8080
//	                                              198.18.2.22/24 member2 :8080

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/internal/procfs"
	"github.com/octavia-go/amphora-agent/internal/testutil"
)

const (
	hlVIP        = "198.51.100.10"
	hlMember1IP  = "198.18.2.21"
	hlMember2IP  = "198.18.2.22"
	hlMemberPort = 8080
	hlMember1    = "member1"
	hlMember2    = "member2"
)

// hlEnv is one test's world: namespaces, members, the agent.
type hlEnv struct {
	dir     string // sandbox of the agent (short: unix socket paths)
	dp, net *testutil.NetNS
	a       *testutil.Agent
	// plain is an HTTP client in the client namespace (new connection
	// per request); tlsCA verifies the TERMINATED_HTTPS listener.
	plain *http.Client
	tlsCA *x509.CertPool
	// serviceFile is what the service manager keeps for a load balancer
	// (unit file or supervisor spec).
	serviceFile func(lbID string) string
	// sd is the private systemd manager (nil for the builtin supervisor).
	sd *testutil.SystemdManager
}

// hlSetup builds the topology and starts the agent with the given
// service manager ("builtin" or "systemd").
func hlSetup(t *testing.T, manager string) *hlEnv {
	t.Helper()
	testutil.RequireNetAdmin(t)
	testutil.RequireBinary(t, "haproxy")
	testutil.RequireRenderer(t)
	if manager == "systemd" {
		testutil.RequireSystemd(t)
	}
	e := &hlEnv{}
	dir := testutil.ShortDir(t, "hl")
	e.dir = dir

	e.dp = testutil.NewNetNS(t, "hl-dp")
	e.net = testutil.NewNetNS(t, "hl-net")
	testutil.Veth(t, e.dp, "eth1", e.net, "c0")
	testutil.Veth(t, e.dp, "eth2", e.net, "m0")
	for _, x := range []struct {
		ns       *testutil.NetNS
		ifc, net string
	}{
		{e.dp, "eth1", hlVIP + "/24"},
		{e.dp, "eth2", "198.18.2.1/24"},
		{e.net, "c0", "198.51.100.2/24"},
		{e.net, "m0", hlMember1IP + "/24"},
		{e.net, "m0", hlMember2IP + "/24"},
	} {
		if err := x.ns.AddAddr(x.ifc, x.net); err != nil {
			t.Fatal(err)
		}
	}
	testutil.StartMember(t, e.net, net.JoinHostPort(hlMember1IP, strconv.Itoa(hlMemberPort)), hlMember1)
	testutil.StartMember(t, e.net, net.JoinHostPort(hlMember2IP, strconv.Itoa(hlMemberPort)), hlMember2)
	e.plain = e.net.HTTPClient(nil, 10*time.Second)

	opts := testutil.Options{
		Dir: dir,
		Options: map[string]string{
			"amphora_agent/network_namespace":         e.dp.Name,
			"amphora_agent/haproxy_user_group_config": filepath.Join(dir, "haproxy-default-user-group.conf"),
			"amphora_agent/service_manager":           manager,
		},
	}
	switch manager {
	case "systemd":
		e.startSystemdManager(t)
		unitDir := e.sd.UnitDir
		opts.Options["amphora_agent/systemd_unit_dir"] = unitDir
		// The agent must run in the manager's mount namespace, where
		// /run/systemd/private is the manager's socket.
		opts.Prefix = e.sd.Prefix()
		e.serviceFile = func(lbID string) string { return filepath.Join(unitDir, "haproxy-"+lbID+".service") }
	default:
		e.serviceFile = func(lbID string) string {
			return filepath.Join(dir, "lib", "supervisor", "haproxy-"+lbID+".json")
		}
	}
	e.a = testutil.StartAgent(t, opts)
	return e
}

// startSystemdManager starts a private systemd manager (its own mount
// namespace and cgroup subtree), removed when the test ends.
func (e *hlEnv) startSystemdManager(t *testing.T) {
	t.Helper()
	e.sd = testutil.StartSystemdManager(t)
	// The image provides amphora-netns.service; the agent's own rendering
	// would change the root namespace's conntrack sysctls of this host
	// (the manager runs in the root network namespace), so the test
	// installs an operator-provided one, which the agent never overwrites.
	unit := "[Unit]\nDescription=test stand-in for the amphora namespace unit\nStopWhenUnneeded=true\n\n" +
		"[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"
	if err := os.WriteFile(filepath.Join(e.sd.UnitDir, "amphora-netns.service"), []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
}

// systemctl runs systemctl --user against the test's manager.
func (e *hlEnv) systemctl(args ...string) (string, error) {
	out, err := e.sd.Systemctl(args...)
	return strings.TrimSpace(out), err
}

// tlsClient is an HTTPS client in the client namespace that verifies the
// listener's certificate against the test CA.
func (e *hlEnv) tlsClient() *http.Client {
	return e.net.HTTPClient(&tls.Config{RootCAs: e.tlsCA, MinVersion: tls.VersionTLS12}, 10*time.Second)
}

// hlTLSBundle makes a CA and a server certificate for the VIP and returns
// the PEM bundle the controller uploads (certificate then key).
func hlTLSBundle(t *testing.T) ([]byte, *x509.CertPool) {
	t.Helper()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hl test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: hlVIP},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP(hlVIP)}, DNSNames: []string{"lb.example.test"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: leafDER})
	pem.Encode(&b, &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return b.Bytes(), pool
}

// hlLB is one load balancer of a test with its listeners.
type hlLB struct {
	id                   string
	httpID, httpsID      string // listener ids
	httpPool, httpsPool  string
	m1HTTP, m2HTTP       string // member ids
	m1HTTPS, m2HTTPS     string
	certID               string
	certName, crtList    string // certificate file names
	crtListBody, certPEM []byte
}

func hlNewLB(e *hlEnv, withTLS bool) *hlLB {
	lb := &hlLB{
		id: testutil.NewUUID(), httpID: testutil.NewUUID(), httpPool: testutil.NewUUID(), m1HTTP: testutil.NewUUID(), m2HTTP: testutil.NewUUID(),
	}
	if withTLS {
		lb.httpsID, lb.httpsPool, lb.m1HTTPS, lb.m2HTTPS, lb.certID = testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID()
		lb.certName = lb.certID + ".pem"
		lb.crtList = lb.httpsID + ".pem"
		// the controller's crt-list: full paths of the bundles, one a line
		lb.crtListBody = []byte(filepath.Join(e.a.CertDir, lb.id, lb.certName) + "\n")
	}
	return lb
}

// spec renders the load balancer with member1 and, when both, member2
// in every pool.
func (lb *hlLB) spec(e *hlEnv, both bool) testutil.RenderSpec {
	members := func(id1, id2 string) []testutil.RenderMember {
		ms := []testutil.RenderMember{{ID: id1, Address: hlMember1IP, Port: hlMemberPort}}
		if both {
			ms = append(ms, testutil.RenderMember{ID: id2, Address: hlMember2IP, Port: hlMemberPort})
		}
		return ms
	}
	ls := []testutil.RenderListener{{
		ID: lb.httpID, Protocol: "HTTP", Port: 80, PoolID: lb.httpPool, Members: members(lb.m1HTTP, lb.m2HTTP),
	}}
	if lb.httpsID != "" {
		ls = append(ls, testutil.RenderListener{
			ID: lb.httpsID, Protocol: "TERMINATED_HTTPS", Port: 443, PoolID: lb.httpsPool,
			Members: members(lb.m1HTTPS, lb.m2HTTPS),
		})
	}
	return e.a.RenderSpec(lb.id, hlVIP, ls...)
}

// hlOctavia runs calls through the controller's client; every call must
// succeed.
func hlOctavia(t *testing.T, a *testutil.Agent, calls ...testutil.OctaviaCall) []testutil.OctaviaResult {
	t.Helper()
	res := a.Octavia(calls...)
	if len(res) != len(calls) {
		t.Fatalf("octavia client answered %d results for %d calls", len(res), len(calls))
	}
	for i, r := range res {
		if !r.OK {
			t.Fatalf("octavia %s (call %d): %s: %s\nagent log:\n%s", calls[i].Call, i, r.Error, r.Message, hlTail(a.Log(), 40))
		}
	}
	return res
}

func hlTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func hlStatus(t *testing.T, r testutil.OctaviaResult) int {
	t.Helper()
	var resp struct {
		StatusCode int `json:"status_code"`
	}
	if err := json.Unmarshal(r.Result, &resp); err != nil {
		t.Fatalf("octavia result %s: %v", r.Result, err)
	}
	return resp.StatusCode
}

// hlReachAll sends requests (new connection each) until every member in
// want answered; every answer must be a 200 from one of want.
func hlReachAll(t *testing.T, c *http.Client, url string, want ...string) {
	t.Helper()
	seen := map[string]int{}
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; i < 200 && time.Now().Before(deadline); i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		code, body, err := testutil.Get(ctx, c, url)
		cancel()
		if err != nil || code != http.StatusOK || !slices.Contains(want, body) {
			t.Fatalf("GET %s: status %d body %q err %v (want 200 from one of %v)", url, code, body, err, want)
		}
		seen[body]++
		if len(seen) == len(want) {
			return
		}
	}
	t.Fatalf("GET %s: answers %v, want every one of %v", url, seen, want)
}

// hlAwaitOnly polls until 20 answers in a row come from member only
// (old haproxy workers may still serve a few connections right after a
// reload); every answer must be a 200.
func hlAwaitOnly(t *testing.T, c *http.Client, url, member string) {
	t.Helper()
	run := 0
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		code, body, err := testutil.Get(ctx, c, url)
		cancel()
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET %s: status %d body %q err %v", url, code, body, err)
		}
		if body == member {
			if run++; run == 20 {
				return
			}
		} else {
			run, last = 0, body
		}
	}
	t.Fatalf("GET %s: still answered by %q, want only %q", url, last, member)
}

// hlLoad is a bounded client load: new connection per request, paced,
// stopped by its context, by a request count or by a time limit.
type hlLoad struct {
	ok, failed atomic.Int64
	mu         sync.Mutex // guards the following
	errs       []string
	seen       map[string]int
	wg         sync.WaitGroup
	cancel     context.CancelFunc
}

type hlTarget struct {
	c   *http.Client
	url string
}

func hlStartLoad(targets []hlTarget, workersPerTarget int, maxRequests int64, maxDuration time.Duration) *hlLoad {
	ctx, cancel := context.WithTimeout(context.Background(), maxDuration)
	l := &hlLoad{seen: map[string]int{}, cancel: cancel}
	var issued atomic.Int64
	for _, tg := range targets {
		for range workersPerTarget {
			l.wg.Go(func() {
				tick := time.NewTicker(15 * time.Millisecond) // pacing: bounded rate
				defer tick.Stop()
				for ctx.Err() == nil && issued.Add(1) <= maxRequests {
					rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
					code, body, err := testutil.Get(rctx, tg.c, tg.url)
					rcancel()
					l.mu.Lock()
					if err != nil || code != http.StatusOK {
						l.failed.Add(1)
						if len(l.errs) < 10 {
							l.errs = append(l.errs, fmt.Sprintf("%s: status %d body %q err %v", tg.url, code, body, err))
						}
					} else {
						l.ok.Add(1)
						l.seen[body]++
					}
					l.mu.Unlock()
					select {
					case <-ctx.Done():
					case <-tick.C:
					}
				}
			})
		}
	}
	return l
}

// stop ends the load and waits for the workers.
func (l *hlLoad) stop() {
	l.cancel()
	l.wg.Wait()
}

func (l *hlLoad) report() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("%d ok, %d failed, answers %v, first errors %q", l.ok.Load(), l.failed.Load(), l.seen, l.errs)
}

// hlMasterPID reads the haproxy master pid from the pid file.
func hlMasterPID(t *testing.T, a *testutil.Agent, lbID string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(a.BasePath, lbID, lbID+".pid"))
	if err != nil {
		t.Fatalf("haproxy pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		t.Fatalf("haproxy pid file %q: %v", data, err)
	}
	if !procfs.Alive(pid) {
		t.Fatalf("haproxy master %d is not running", pid)
	}
	return pid
}

func hlWaitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for procfs.Alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("haproxy master %d still running", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hlAwaitRefused polls until nothing listens on the VIP port any more.
func hlAwaitRefused(t *testing.T, e *hlEnv, port int) {
	t.Helper()
	addr := net.JoinHostPort(hlVIP, strconv.Itoa(port))
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := e.net.DialContext(ctx, "tcp", addr)
		cancel()
		if errors.Is(err, syscall.ECONNREFUSED) {
			return
		}
		if c != nil {
			c.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still accepts connections (last err %v)", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hlExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// hlListeners decodes get_all_listeners / GET /1.0/listeners.
func hlListeners(t *testing.T, raw []byte) map[string]string {
	t.Helper()
	var ls []struct{ Status, UUID, Type string }
	if err := json.Unmarshal(raw, &ls); err != nil {
		t.Fatalf("listeners %s: %v", raw, err)
	}
	out := map[string]string{}
	for _, l := range ls {
		out[l.UUID] = l.Status + " " + l.Type
	}
	return out
}

// TestLBLifecycle runs the controller's life cycle of a load balancer
// (certificates, config upload, start, 20 hitless reloads under load
// with a changed member set, stop, delete) under both service managers.
func TestLBLifecycle(t *testing.T) {
	for _, manager := range []string{"builtin", "systemd"} {
		t.Run(manager, func(t *testing.T) {
			e := hlSetup(t, manager)
			hlLifecycle(t, e)
		})
	}
}

func hlLifecycle(t *testing.T, e *hlEnv) {
	a := e.a
	lb := hlNewLB(e, true)
	lb.certPEM, e.tlsCA = hlTLSBundle(t)
	cfgs := testutil.Render(t, lb.spec(e, true), lb.spec(e, false))
	full, reduced := cfgs[0], cfgs[1]
	call := func(name string, args ...any) testutil.OctaviaCall {
		return testutil.OctaviaCall{Call: name, Args: args}
	}

	// Certificates first (the config's crt-list refers to them), the way
	// the controller does it: look up the MD5, upload, then the crt-list.
	res := hlOctavia(t, a,
		call("get_cert_md5sum", lb.id, lb.certName, []int{404}),
		call("upload_cert_pem", lb.id, lb.certName, string(lb.certPEM)),
		call("upload_cert_pem", lb.id, lb.crtList, string(lb.crtListBody)),
		call("get_cert_md5sum", lb.id, lb.certName),
		call("get_cert_md5sum", lb.id, lb.crtList),
		call("upload_config", lb.id, full),
		call("start_listener", lb.id),
		call("get_all_listeners"),
	)
	if string(res[0].Result) != "null" {
		t.Errorf("md5 of a certificate not uploaded yet = %s, want null (404)", res[0].Result)
	}
	for i, want := range map[int][]byte{3: lb.certPEM, 4: lb.crtListBody} {
		var got string
		if err := json.Unmarshal(res[i].Result, &got); err != nil || got != fsutil.MD5Hex(want) {
			t.Errorf("get_cert_md5sum result %s, want %q", res[i].Result, fsutil.MD5Hex(want))
		}
	}
	if got := hlStatus(t, res[5]); got != http.StatusAccepted {
		t.Errorf("upload_config status %d, want 202", got)
	}
	if got := hlStatus(t, res[6]); got != http.StatusAccepted {
		t.Errorf("start_listener status %d, want 202", got)
	}
	wantListeners := map[string]string{lb.httpID: "ACTIVE HTTP", lb.httpsID: "ACTIVE TERMINATED_HTTPS"}
	if diff := cmp.Diff(wantListeners, hlListeners(t, res[7].Result)); diff != "" {
		t.Errorf("listeners (-want +got):\n%s", diff)
	}
	for _, f := range []string{lb.certName, lb.crtList} {
		fi, err := os.Stat(filepath.Join(a.CertDir, lb.id, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("certificate file %s: %v, mode %v (want 0600)", f, err, fi.Mode())
		}
	}
	if !hlExists(e.serviceFile(lb.id)) {
		t.Errorf("service definition %s missing after the upload", e.serviceFile(lb.id))
	}
	if e.sd != nil {
		if out, err := e.systemctl("is-active", "haproxy-"+lb.id+".service"); err != nil || out != "active" {
			t.Errorf("systemctl is-active haproxy-%s: %q %v", lb.id, out, err)
		}
	}

	httpURL, httpsURL := "http://"+hlVIP+"/", "https://"+hlVIP+"/"
	tlsC := e.tlsClient()
	hlReachAll(t, e.plain, httpURL, hlMember1, hlMember2)
	hlReachAll(t, tlsC, httpsURL, hlMember1, hlMember2)
	master := hlMasterPID(t, a, lb.id)

	// 20 reloads while a bounded load runs from the client namespace:
	// the member set alternates, the last one keeps member1 only.
	var calls []testutil.OctaviaCall
	for i := 1; i <= 20; i++ {
		cfg := reduced
		if i%2 == 0 && i < 20 {
			cfg = full
		}
		calls = append(calls, call("upload_config", lb.id, cfg), call("reload_listener", lb.id))
	}
	load := hlStartLoad([]hlTarget{{e.plain, httpURL}, {tlsC, httpsURL}}, 2, 20000, 90*time.Second)
	t0 := time.Now()
	res = a.Octavia(calls...)
	took := time.Since(t0)
	load.stop()
	t.Logf("20 uploads+reloads in %v; load: %s", took.Round(time.Millisecond), load.report())
	for i, r := range res {
		if !r.OK {
			t.Fatalf("octavia %s (call %d): %s: %s\nagent log:\n%s", calls[i].Call, i, r.Error, r.Message, hlTail(a.Log(), 40))
		}
		if got := hlStatus(t, r); got != http.StatusAccepted {
			t.Errorf("%s (call %d) status %d, want 202", calls[i].Call, i, got)
		}
	}
	if load.failed.Load() != 0 {
		t.Errorf("failed requests across the reloads: %s", load.report())
	}
	if load.ok.Load() < 100 {
		t.Errorf("load too small to mean anything: %s", load.report())
	}
	if got := hlMasterPID(t, a, lb.id); got != master {
		t.Errorf("haproxy master pid %d after the reloads, was %d (a reload must not restart it)", got, master)
	}
	hlAwaitOnly(t, e.plain, httpURL, hlMember1)
	hlAwaitOnly(t, tlsC, httpsURL, hlMember1)
	if got, err := os.ReadFile(filepath.Join(a.BasePath, lb.id, "haproxy.cfg")); err != nil || string(got) != reduced {
		t.Errorf("installed config is not the last upload (err %v)", err)
	}

	// stop
	code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+lb.id+"/stop", nil)
	if code != http.StatusAccepted {
		t.Fatalf("stop: %d %s", code, body)
	}
	if diff := cmp.Diff(`{"message":"OK","details":"Listener `+lb.id+` stoped"}`, string(body)); diff != "" {
		t.Errorf("stop body (-want +got):\n%s", diff)
	}
	hlWaitGone(t, master)
	hlAwaitRefused(t, e, 80)
	hlAwaitRefused(t, e, 443)
	if e.sd != nil {
		if out, _ := e.systemctl("is-active", "haproxy-"+lb.id+".service"); out != "inactive" {
			t.Errorf("systemctl is-active after stop: %q, want inactive", out)
		}
	}

	// delete: certificates, then the load balancer, twice
	res = hlOctavia(t, a,
		call("delete_cert_pem", lb.id, lb.certName),
		call("get_cert_md5sum", lb.id, lb.certName, []int{404}),
		call("delete_listener", lb.id),
		call("delete_listener", lb.id),
		call("get_all_listeners"),
	)
	if string(res[1].Result) != "null" {
		t.Errorf("md5 of a deleted certificate = %s, want null (404)", res[1].Result)
	}
	for _, i := range []int{2, 3} {
		if got := hlStatus(t, res[i]); got != http.StatusOK {
			t.Errorf("delete_listener (call %d) status %d, want 200", i, got)
		}
	}
	if string(res[4].Result) != "[]" {
		t.Errorf("listeners after delete: %s, want []", res[4].Result)
	}
	for _, p := range []string{
		filepath.Join(a.BasePath, lb.id),
		filepath.Join(a.BasePath, lb.id+".sock"),
		filepath.Join(a.CertDir, lb.id),
		e.serviceFile(lb.id),
	} {
		if hlExists(p) {
			t.Errorf("%s still exists after delete", p)
		}
	}
	if e.sd != nil {
		if out, _ := e.systemctl("show", "-p", "LoadState", "--value", "haproxy-"+lb.id+".service"); out != "not-found" {
			t.Errorf("unit LoadState after delete: %q, want not-found", out)
		}
	}
	if code, _, body := a.Do(http.MethodGet, "/1.0/loadbalancer/"+lb.id+"/haproxy", nil); code != http.StatusNotFound {
		t.Errorf("GET config after delete: %d %s, want 404", code, body)
	}
}

// hlUploadStart uploads cfg and starts the load balancer with plain
// requests (the controller's client is exercised by TestLBLifecycle).
func hlUploadStart(t *testing.T, a *testutil.Agent, lbID, cfg string) {
	t.Helper()
	if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+a.AmphoraID+"/"+lbID+"/haproxy", []byte(cfg)); code != http.StatusAccepted {
		t.Fatalf("upload: %d %s", code, body)
	}
	if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+lbID+"/start", nil); code != http.StatusAccepted {
		t.Fatalf("start: %d %s\n%s", code, body, hlTail(a.Log(), 30))
	}
}

// TestLBInvalidConfigKeepsServing: a configuration haproxy refuses is
// answered 400 with haproxy's output, kept as haproxy.cfg.new-failed, and
// the running configuration goes on serving (also across a reload).
func TestLBInvalidConfigKeepsServing(t *testing.T) {
	e := hlSetup(t, "builtin")
	a := e.a
	lb := hlNewLB(e, false)
	good := testutil.Render(t, lb.spec(e, true))[0]
	hlUploadStart(t, a, lb.id, good)
	url := "http://" + hlVIP + "/"
	hlReachAll(t, e.plain, url, hlMember1, hlMember2)

	bad := good + "    no-such-keyword-hl 1\n"
	load := hlStartLoad([]hlTarget{{e.plain, url}}, 2, 5000, 60*time.Second)
	code, hdr, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+a.AmphoraID+"/"+lb.id+"/haproxy", []byte(bad))
	reloadCode, _, reloadBody := a.Do(http.MethodPut, "/1.0/loadbalancer/"+lb.id+"/reload", nil)
	load.stop()
	t.Logf("load during the refused upload and the reload: %s", load.report())
	if code != http.StatusBadRequest || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
		t.Fatalf("invalid upload: %d %s %s, want 400 JSON", code, hdr.Get("Content-Type"), body)
	}
	var resp struct{ Message, Details string }
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("invalid upload body %s: %v", body, err)
	}
	if resp.Message != "Invalid request" || !strings.Contains(resp.Details, "[ALERT]") ||
		!strings.Contains(resp.Details, "no-such-keyword-hl") {
		t.Errorf("invalid upload answer %+v: want message \"Invalid request\" and haproxy's alerts in details", resp)
	}
	dir := filepath.Join(a.BasePath, lb.id)
	if got, err := os.ReadFile(filepath.Join(dir, "haproxy.cfg.new-failed")); err != nil || string(got) != bad {
		t.Errorf("haproxy.cfg.new-failed: err %v, equal to the refused upload: %v", err, string(got) == bad)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "haproxy.cfg")); err != nil || string(got) != good {
		t.Errorf("haproxy.cfg changed by a refused upload (err %v)", err)
	}
	if hlExists(filepath.Join(dir, "haproxy.cfg.new")) {
		t.Errorf("haproxy.cfg.new left behind")
	}
	if reloadCode != http.StatusAccepted {
		t.Errorf("reload after the refused upload: %d %s", reloadCode, reloadBody)
	}
	if load.failed.Load() != 0 || load.ok.Load() == 0 {
		t.Errorf("traffic during the refused upload and reload: %s", load.report())
	}
	if code, _, body := a.Do(http.MethodGet, "/1.0/loadbalancer/"+lb.id+"/haproxy", nil); code != http.StatusOK || string(body) != good {
		t.Errorf("GET config after the refused upload: %d, equal to the good one: %v", code, string(body) == good)
	}
	hlReachAll(t, e.plain, url, hlMember1, hlMember2)

	// deleting a running load balancer stops its haproxy first
	master := hlMasterPID(t, a, lb.id)
	if code, _, body := a.Do(http.MethodDelete, "/1.0/listeners/"+lb.id, nil); code != http.StatusOK {
		t.Fatalf("delete: %d %s", code, body)
	}
	hlWaitGone(t, master)
	hlAwaitRefused(t, e, 80)
	for _, p := range []string{dir, e.serviceFile(lb.id)} {
		if hlExists(p) {
			t.Errorf("%s still exists after delete", p)
		}
	}
}

// hlTree lists every path under root with its size (skipping the agent's
// own log, which grows with every request).
func hlTree(t *testing.T, root string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == filepath.Join(root, "agent.log") {
			return nil
		}
		var size int64 = -1
		if !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				size = fi.Size()
			}
		}
		out[strings.TrimPrefix(p, root)] = size
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLBInputHygiene: malformed ids and certificate names that could
// leave the base directories are refused with a 400 JSON answer, and
// nothing is created anywhere.
func TestLBInputHygiene(t *testing.T) {
	e := hlSetup(t, "builtin")
	a := e.a
	lb := hlNewLB(e, false)
	amp := a.AmphoraID
	cfg := []byte(testutil.Render(t, lb.spec(e, true))[0])
	before := hlTree(t, e.dir)

	type req struct {
		method, path string
		body         []byte
	}
	var reqs []req
	badIDs := []string{"not-a-uuid", "%2E%2E", "..%2F..%2Fetc", lb.id + "0", strings.ToUpper(lb.id)[:35] + "g",
		"a%20b", lb.id + "%2F..%2F" + lb.id}
	for _, id := range badIDs {
		reqs = append(reqs,
			req{http.MethodPut, "/1.0/loadbalancer/" + amp + "/" + id + "/haproxy", cfg},
			req{http.MethodPut, "/1.0/loadbalancer/" + id + "/" + lb.id + "/haproxy", cfg},
			req{http.MethodGet, "/1.0/loadbalancer/" + id + "/haproxy", nil},
			req{http.MethodPut, "/1.0/loadbalancer/" + id + "/start", nil},
			req{http.MethodPut, "/1.0/loadbalancer/" + id + "/reload", nil},
			req{http.MethodDelete, "/1.0/listeners/" + id, nil},
			req{http.MethodPut, "/1.0/loadbalancer/" + id + "/certificates/x.pem", []byte("pem")},
			req{http.MethodGet, "/1.0/loadbalancer/" + id + "/certificates/x.pem", nil},
			req{http.MethodDelete, "/1.0/loadbalancer/" + id + "/certificates/x.pem", nil},
		)
	}
	badNames := []string{"..%2Fx.pem", "..%2F..%2F..%2Fx.pem", "a%2Fb.pem", "x.pem.bak", "a%20b.pem", "..pem",
		".pem", "%2E%2E%2Fx.pem", "x.pem%20", "x.txt"}
	for _, n := range badNames {
		reqs = append(reqs,
			req{http.MethodPut, "/1.0/loadbalancer/" + lb.id + "/certificates/" + n, []byte("pem")},
			req{http.MethodGet, "/1.0/loadbalancer/" + lb.id + "/certificates/" + n, nil},
			req{http.MethodDelete, "/1.0/loadbalancer/" + lb.id + "/certificates/" + n, nil},
		)
	}
	for _, r := range reqs {
		code, hdr, body := a.Do(r.method, r.path, r.body)
		var obj map[string]any
		if code != http.StatusBadRequest || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") ||
			json.Unmarshal(body, &obj) != nil {
			t.Errorf("%s %s: %d %q %s, want 400 with a JSON body", r.method, r.path, code, hdr.Get("Content-Type"), body)
		}
	}
	if diff := cmp.Diff(before, hlTree(t, e.dir)); diff != "" {
		t.Errorf("refused requests changed the sandbox (-before +after):\n%s", diff)
	}
	for _, n := range []string{"x.pem", "b.pem", "a b.pem"} {
		for _, d := range []string{e.dir, a.BasePath, a.CertDir, filepath.Join(a.CertDir, lb.id)} {
			if hlExists(filepath.Join(d, n)) {
				t.Errorf("%s was created", filepath.Join(d, n))
			}
		}
	}
	// sanity: the same requests with good names work
	if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+lb.id+"/certificates/x.pem", []byte("pem")); code != http.StatusOK {
		t.Errorf("PUT a well-named certificate: %d %s", code, body)
	}
	if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+amp+"/"+lb.id+"/haproxy", cfg); code != http.StatusAccepted {
		t.Errorf("PUT a config with good ids: %d %s", code, body)
	}
}

// TestLBConcurrentUploads: 50 different valid configs uploaded at once
// to one load balancer leave one of them installed, byte for byte, and
// no staging file; and one load balancer's long operation does not hold
// up another's.
func TestLBConcurrentUploads(t *testing.T) {
	e := hlSetup(t, "builtin")
	a := e.a
	lb := hlNewLB(e, false)
	base := testutil.Render(t, lb.spec(e, true))[0]
	if !strings.Contains(base, "    timeout client 50000\n") {
		t.Fatalf("rendered config has no client timeout to vary:\n%s", base)
	}
	const n = 50
	cfgs := make([]string, n)
	for i := range cfgs {
		cfgs[i] = strings.Replace(base, "    timeout client 50000\n", fmt.Sprintf("    timeout client %d\n", 50000+i), 1)
	}
	codes := make([]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			codes[i], _, errs[i] = hlPut(a, "/1.0/loadbalancer/"+a.AmphoraID+"/"+lb.id+"/haproxy", bytes.NewReader([]byte(cfgs[i])))
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || codes[i] != http.StatusAccepted {
			t.Errorf("upload %d: %d %v", i, codes[i], errs[i])
		}
	}
	dir := filepath.Join(a.BasePath, lb.id)
	installed, err := os.ReadFile(filepath.Join(dir, "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(cfgs, string(installed)) {
		t.Errorf("installed config is none of the uploads:\n%s", installed)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	if diff := cmp.Diff([]string{"haproxy.cfg"}, names); diff != "" {
		t.Errorf("load balancer directory after the uploads (-want +got):\n%s", diff)
	}
	ug := filepath.Join(e.dir, "haproxy-default-user-group.conf")
	if out, err := exec.Command("haproxy", "-c", "-f", filepath.Join(dir, "haproxy.cfg"), "-f", ug).CombinedOutput(); err != nil {
		t.Errorf("installed config is not valid: %v\n%s", err, out)
	}
	if code, _, body := a.Do(http.MethodGet, "/1.0/loadbalancer/"+lb.id+"/haproxy", nil); code != http.StatusOK || !bytes.Equal(body, installed) {
		t.Errorf("GET config: %d, equal to the installed file: %v", code, bytes.Equal(body, installed))
	}

	hlParallelLBs(t, e, base)
}

// hlPut sends one PUT from any goroutine (testutil's Agent.Do may only be
// used from the test goroutine).
func hlPut(a *testutil.Agent, path string, body io.Reader) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, a.URL(path), body)
	if err != nil {
		return 0, nil, err
	}
	resp, err := a.Client(a.PKI.ClientPEM).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes(), err
}

// hlParallelLBs makes load balancer A busy in a way the test controls:
// its configuration names a FIFO as a certificate, so A's `haproxy -c`
// (run under A's lock) blocks in reading it until the test lets it go.
// The test knows A is busy once the FIFO has a reader. While A is held,
// an upload to load balancer B must complete, and a second upload to A
// must not (it waits for A's lock). No timing assumption: A stays busy
// until the test releases it.
func hlParallelLBs(t *testing.T, e *hlEnv, base string) {
	a := e.a
	fifo := filepath.Join(e.dir, "hold.pem")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// whatever happens, never leave a haproxy -c blocked in opening the
	// FIFO (an O_RDWR open does not block and counts as a writer)
	defer func() {
		if fd, err := syscall.Open(fifo, syscall.O_RDWR|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0); err == nil {
			syscall.Close(fd)
		}
	}()
	lbA, lbB := testutil.NewUUID(), testutil.NewUUID()
	// A's config: the base plus a TLS frontend whose certificate is the FIFO
	slowA := base + "\nfrontend hl-hold\n    mode http\n    bind 127.0.0.1:1 ssl crt " + fifo + "\n"
	type answer struct {
		code int
		body []byte
		err  error
	}
	first := make(chan answer, 1)
	go func() {
		c, b, err := hlPut(a, "/1.0/loadbalancer/"+a.AmphoraID+"/"+lbA+"/haproxy", bytes.NewReader([]byte(slowA)))
		first <- answer{c, b, err}
	}()
	// A is busy once haproxy -c opened the FIFO for reading: before that,
	// opening it for writing without blocking fails with ENXIO.
	var w *os.File
	deadline := time.Now().Add(60 * time.Second)
	for {
		fd, err := syscall.Open(fifo, syscall.O_WRONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
		if err == nil {
			w = os.NewFile(uintptr(fd), fifo)
			break
		}
		if !errors.Is(err, syscall.ENXIO) {
			t.Fatalf("open fifo: %v", err)
		}
		select {
		case r := <-first:
			t.Fatalf("upload to A finished before reading the FIFO: %d %s %v", r.code, r.body, r.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("haproxy -c of A never opened the FIFO")
		}
		time.Sleep(10 * time.Millisecond)
	}
	released := false
	release := func() {
		if !released {
			released = true
			w.Close() // EOF: haproxy -c of A fails, the upload ends with 400
		}
	}
	defer release()

	second := make(chan answer, 1)
	go func() {
		c, b, err := hlPut(a, "/1.0/loadbalancer/"+a.AmphoraID+"/"+lbA+"/haproxy", bytes.NewReader([]byte(base)))
		second <- answer{c, b, err}
	}()
	code, body, err := hlPut(a, "/1.0/loadbalancer/"+a.AmphoraID+"/"+lbB+"/haproxy", bytes.NewReader([]byte(base)))
	if err != nil || code != http.StatusAccepted {
		t.Fatalf("upload to B while A is busy: %d %s %v", code, body, err)
	}
	select {
	case r := <-first:
		t.Fatalf("A's held upload finished while the test held it: %d %s %v", r.code, r.body, r.err)
	case r := <-second:
		t.Fatalf("a second upload to A finished while A was busy: %d %s %v", r.code, r.body, r.err)
	default:
	}
	release()
	r1, r2 := <-first, <-second
	if r1.err != nil || r1.code != http.StatusBadRequest {
		t.Errorf("held upload to A (unreadable certificate): %d %s %v, want 400", r1.code, r1.body, r1.err)
	}
	if r2.err != nil || r2.code != http.StatusAccepted {
		t.Errorf("second upload to A: %d %s %v, want 202", r2.code, r2.body, r2.err)
	}
	for _, id := range []string{lbA, lbB} {
		if got, err := os.ReadFile(filepath.Join(a.BasePath, id, "haproxy.cfg")); err != nil || string(got) != base {
			t.Errorf("config of %s: err %v, equal to the last good upload: %v", id, err, string(got) == base)
		}
	}
}

// TestLBBuiltinSurvivesAgentRestart: haproxy run by the builtin
// supervisor outlives an agent restart, is re-adopted (same master pid),
// keeps serving, and can still be reloaded and stopped by the new agent.
func TestLBBuiltinSurvivesAgentRestart(t *testing.T) {
	e := hlSetup(t, "builtin")
	a := e.a
	lb := hlNewLB(e, false)
	cfgs := testutil.Render(t, lb.spec(e, true), lb.spec(e, false))
	full, reduced := cfgs[0], cfgs[1]
	hlUploadStart(t, a, lb.id, full)
	url := "http://" + hlVIP + "/"
	hlReachAll(t, e.plain, url, hlMember1, hlMember2)
	master := hlMasterPID(t, a, lb.id)

	a.Restart()
	if got := hlMasterPID(t, a, lb.id); got != master {
		t.Fatalf("haproxy master pid %d after the agent restart, was %d", got, master)
	}
	hlReachAll(t, e.plain, url, hlMember1, hlMember2)
	code, _, body := a.Do(http.MethodGet, "/1.0/listeners", nil)
	if diff := cmp.Diff(map[string]string{lb.httpID: "ACTIVE HTTP"}, hlListeners(t, body)); code != http.StatusOK || diff != "" {
		t.Errorf("listeners after the restart: %d (-want +got):\n%s", code, diff)
	}

	if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+a.AmphoraID+"/"+lb.id+"/haproxy", []byte(reduced)); code != http.StatusAccepted {
		t.Fatalf("upload after the restart: %d %s", code, body)
	}
	code, _, body = a.Do(http.MethodPut, "/1.0/loadbalancer/"+lb.id+"/reload", nil)
	if diff := cmp.Diff(`{"message":"OK","details":"Listener `+lb.id+` reloaded"}`, string(body)); code != http.StatusAccepted || diff != "" {
		t.Fatalf("reload after the restart: %d (-want +got):\n%s\n%s", code, diff, hlTail(a.Log(), 30))
	}
	if got := hlMasterPID(t, a, lb.id); got != master {
		t.Errorf("haproxy master pid %d after the reload, was %d", got, master)
	}
	hlAwaitOnly(t, e.plain, url, hlMember1)

	if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+lb.id+"/stop", nil); code != http.StatusAccepted {
		t.Fatalf("stop after the restart: %d %s", code, body)
	}
	hlWaitGone(t, master)
	hlAwaitRefused(t, e, 80)

	// a reload of a stopped load balancer starts it (the reference's rule)
	code, _, body = a.Do(http.MethodPut, "/1.0/loadbalancer/"+lb.id+"/reload", nil)
	want := `{"message":"OK","details":"Configuration file is valid\nhaproxy daemon for ` + lb.id + ` started"}`
	if diff := cmp.Diff(want, string(body)); code != http.StatusAccepted || diff != "" {
		t.Fatalf("reload of a stopped load balancer: %d (-want +got):\n%s", code, diff)
	}
	hlAwaitOnly(t, e.plain, url, hlMember1)
	master = hlMasterPID(t, a, lb.id)
	if code, _, body := a.Do(http.MethodDelete, "/1.0/listeners/"+lb.id, nil); code != http.StatusOK {
		t.Fatalf("delete: %d %s", code, body)
	}
	hlWaitGone(t, master)
	if hlExists(filepath.Join(a.BasePath, lb.id)) || hlExists(e.serviceFile(lb.id)) {
		t.Errorf("load balancer files left after delete")
	}
}

// TestLBServiceRepairedAtStart: a crash between installing a
// configuration and its service (or a lost service definition) is
// repaired when the agent starts again: the service is back and the load
// balancer starts.
func TestLBServiceRepairedAtStart(t *testing.T) {
	e := hlSetup(t, "builtin")
	a := e.a
	lb := hlNewLB(e, false)
	cfg := testutil.Render(t, lb.spec(e, true))[0]
	if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+a.AmphoraID+"/"+lb.id+"/haproxy", []byte(cfg)); code != http.StatusAccepted {
		t.Fatalf("upload: %d %s", code, body)
	}
	a.Stop()
	if err := os.Remove(e.serviceFile(lb.id)); err != nil {
		t.Fatal(err)
	}
	a.Start()
	if !hlExists(e.serviceFile(lb.id)) {
		t.Fatalf("service definition not restored at start:\n%s", hlTail(a.Log(), 20))
	}
	if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+lb.id+"/start", nil); code != http.StatusAccepted {
		t.Fatalf("start after the repair: %d %s\n%s", code, body, hlTail(a.Log(), 20))
	}
	hlReachAll(t, e.plain, "http://"+hlVIP+"/", hlMember1, hlMember2)
}
