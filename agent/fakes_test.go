package agent

// Fakes of the interfaces this package declares, for the handler tests:
// the REST layer is tested on its own, without root, haproxy or a
// network namespace (the real components have their own tests, and
// cmd/amphora-agent drives the whole binary with the controller's
// client). Each fake records its calls and answers what the test set.

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/agent/hostinfo"
	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/keepalived"
	"github.com/octavia-go/amphora-agent/netns"
)

// Ids used by the tests.
const (
	ampID = "6e9fd1a2-1234-4cde-8f00-aabbccddeeff"
	lbID  = "3c3c3c3c-0000-4000-8000-000000000001"
	lvsID = "5a5a5a5a-0000-4000-8000-000000000001"
	lisID = "8a1b2c3d-0000-4000-8000-000000000001"
)

// recorder is embedded by every fake.
type recorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *recorder) record(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf(format, args...))
}

// called returns the calls recorded so far and forgets them.
func (r *recorder) called() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

// fakeLBs is the haproxy side (haproxy.Manager).
type fakeLBs struct {
	recorder
	configs   map[string]string // configured load balancers
	running   []string
	listeners []haproxy.ListenerStatus
	details   string // Action's detail text
	err       error  // returned by the next Upload, Action, Delete, certificate call
	certMD5   string
}

func (f *fakeLBs) Exists(id string) bool { _, ok := f.configs[id]; return ok }
func (f *fakeLBs) ListenerIDs() []string {
	var ids []string
	for _, l := range f.listeners {
		ids = append(ids, l.UUID)
	}
	slices.Sort(ids)
	return ids
}
func (f *fakeLBs) RunningLoadBalancers(context.Context) []string { return f.running }

func (f *fakeLBs) Upload(_ context.Context, amp, lb string, r io.Reader) (string, error) {
	body, _ := io.ReadAll(r)
	f.record("upload %s %s %q", amp, lb, body)
	return fsutil.MD5Hex(body), f.err
}

func (f *fakeLBs) Config(lb string) ([]byte, error) {
	if !fsutil.ValidID(lb) {
		return nil, haproxy.ErrBadID
	}
	c, ok := f.configs[lb]
	if !ok {
		return nil, haproxy.ErrNotFound
	}
	return []byte(c), nil
}

func (f *fakeLBs) Action(_ context.Context, lb, action string) (string, error) {
	f.record("action %s %s", lb, action)
	return f.details, f.err
}

func (f *fakeLBs) Delete(_ context.Context, lb string) error {
	f.record("delete %s", lb)
	return f.err
}

func (f *fakeLBs) Listeners(context.Context) []haproxy.ListenerStatus {
	return append([]haproxy.ListenerStatus{}, f.listeners...)
}

func (f *fakeLBs) PutCertificate(_ context.Context, lb, name string, body io.Reader, limit int64) (string, error) {
	data, _ := io.ReadAll(body)
	f.record("put cert %s %s %q limit %d", lb, name, data, limit)
	return fsutil.MD5Hex(data), f.err
}

func (f *fakeLBs) CertificateMD5(lb, name string) (string, error) {
	f.record("cert md5 %s %s", lb, name)
	return f.certMD5, f.err
}

func (f *fakeLBs) DeleteCertificate(_ context.Context, lb, name string) error {
	f.record("delete cert %s %s", lb, name)
	return f.err
}

// fakeLVS is the UDP/SCTP side (keepalived.LVSManager).
type fakeLVS struct {
	recorder
	configs   map[string]string
	running   int
	listeners []keepalived.LVSListenerStatus
	details   string
	err       error
}

func (f *fakeLVS) Exists(id string) bool { _, ok := f.configs[id]; return ok }
func (f *fakeLVS) List() []string {
	var ids []string
	for id := range f.configs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
func (f *fakeLVS) RunningCount() int { return f.running }

func (f *fakeLVS) Upload(_ context.Context, amp, id string, r io.Reader) (string, error) {
	body, _ := io.ReadAll(r)
	f.record("upload %s %s %q", amp, id, body)
	return fsutil.MD5Hex(body), f.err
}

func (f *fakeLVS) Config(id string) ([]byte, error) {
	if !fsutil.ValidID(id) {
		return nil, keepalived.ErrBadID
	}
	c, ok := f.configs[id]
	if !ok {
		return nil, keepalived.ErrListenerNotFound
	}
	return []byte(c), nil
}

func (f *fakeLVS) Action(_ context.Context, id, action string) (string, error) {
	f.record("action %s %s", id, action)
	return f.details, f.err
}

func (f *fakeLVS) Delete(_ context.Context, id string) error {
	f.record("delete %s", id)
	return f.err
}

func (f *fakeLVS) Listeners(context.Context) []keepalived.LVSListenerStatus { return f.listeners }

// fakeVRRP is the VRRP keepalived (keepalived.Manager).
type fakeVRRP struct {
	recorder
	details string
	err     error
}

func (f *fakeVRRP) Upload(_ context.Context, r io.Reader) (string, error) {
	body, _ := io.ReadAll(r)
	f.record("upload %q", body)
	return fsutil.MD5Hex(body), f.err
}

func (f *fakeVRRP) Action(_ context.Context, action string) (string, error) {
	f.record("action %s", action)
	return f.details, f.err
}

// fakeNet is the data-plane plumbing (netns.Manager).
type fakeNet struct {
	recorder
	result *netns.PlugResult
	iface  string
	err    error
}

func (f *fakeNet) Traffic() map[string]netns.Traffic {
	return map[string]netns.Traffic{"eth1": {TX: 10, RX: 20}}
}

func (f *fakeNet) PlugVIP(_ context.Context, r *netns.PlugVIPRequest) (*netns.PlugResult, error) {
	f.record("plug vip %s %s", r.VIP, r.MACAddress)
	return f.result, f.err
}

func (f *fakeNet) PlugNetwork(_ context.Context, r *netns.PlugNetworkRequest) (*netns.PlugResult, error) {
	f.record("plug network %s", r.MACAddress)
	return f.result, f.err
}

func (f *fakeNet) InterfaceForIP(_ context.Context, ip string) (string, error) {
	f.record("interface %s", ip)
	return f.iface, f.err
}

func (f *fakeNet) SetInterfaceRules(_ context.Context, ip string, body []byte) error {
	f.record("rules %s %s", ip, body)
	return f.err
}

// fakeHost is the machine (hostinfo.Probe).
type fakeHost struct{ err error }

func ptr(s string) *string { return &s }

func (fakeHost) Versions(context.Context) hostinfo.Versions {
	return hostinfo.Versions{HAProxy: ptr("2.6.12-1+deb12u1"), Keepalived: ptr("1:2.2.7-1+b2")}
}

func (f fakeHost) System() (*hostinfo.System, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &hostinfo.System{
		CPUCount:      2,
		CPU:           hostinfo.CPU{Total: 342, User: "10", System: "20", SoftIRQ: "7"},
		Memory:        hostinfo.Memory{Total: 2048, Free: 1024, Buffers: 8, Cached: 16, SwapCached: 1, Shmem: 2, Slab: 4},
		Disk:          hostinfo.Disk{Used: 100, Available: 200},
		Load:          []string{"0.42", "0.41", "0.21"},
		TunedProfiles: "amphora",
	}, nil
}

// fakeCerts is the agent's server certificate (certs.Store).
type fakeCerts struct {
	recorder
	err error
}

func (f *fakeCerts) Replace(data []byte) error {
	f.record("replace %q", data)
	return f.err
}

func (f *fakeCerts) ServerConfig(uint16) *tls.Config { return &tls.Config{} }

// api is a Server on fakes, with the configuration file it was started
// with under a temporary directory.
type api struct {
	*Server
	lbs   *fakeLBs
	lvs   *fakeLVS
	vrrp  *fakeVRRP
	net   *fakeNet
	certs *fakeCerts
	conf  string // the --config-file
}

func newAPI(t *testing.T) *api {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "amphora-agent.conf")
	if err := os.WriteFile(conf, []byte("[amphora_agent]\namphora_id = "+ampID+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(conf)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxBodySize = 1024
	a := &api{
		lbs:   &fakeLBs{configs: map[string]string{}},
		lvs:   &fakeLVS{configs: map[string]string{}},
		vrrp:  &fakeVRRP{},
		net:   &fakeNet{},
		certs: &fakeCerts{},
		conf:  conf,
	}
	a.Server = New(Deps{
		Config: config.NewStore(cfg),
		Certs:  a.certs,
		Host:   fakeHost{},
		LBs:    a.lbs,
		Net:    a.net,
		VRRP:   a.vrrp,
		LVS:    a.lvs,
	})
	return a
}

// answer is what a request got.
type answer struct {
	status int
	header http.Header
	body   string
}

// do sends one request through the whole handler chain (logging, path
// normalisation, HEAD) as the TLS server would.
func (a *api) do(method, path, body string) answer {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, req)
	return answer{status: rec.Code, header: rec.Header(), body: rec.Body.String()}
}

// is checks an answer: status, exact body, Content-Type, and the ETag
// when etag is not "" ("-" means: no ETag header).
func (ans answer) is(t *testing.T, status int, contentType, body, etag string) {
	t.Helper()
	if ans.status != status {
		t.Errorf("status %d, want %d (body %s)", ans.status, status, ans.body)
	}
	if got := ans.header.Get("Content-Type"); got != contentType {
		t.Errorf("Content-Type %q, want %q", got, contentType)
	}
	if d := cmp.Diff(body, ans.body); d != "" {
		t.Errorf("body (-want +got):\n%s", d)
	}
	switch got := ans.header.Values("ETag"); {
	case etag == "-" && len(got) != 0:
		t.Errorf("ETag %q, want none", got)
	case etag != "" && etag != "-" && (len(got) != 1 || got[0] != etag):
		t.Errorf("ETag %q, want %q", got, etag)
	}
}

// json checks a JSON answer (Content-Type application/json, no charset).
func (ans answer) json(t *testing.T, status int, body string) {
	t.Helper()
	ans.is(t, status, "application/json", body, "")
}

// Bodies of the reference's generic error handler.
const (
	notFound   = `{"error":"404 Not Found: The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.","http_code":404}`
	notAllowed = `{"error":"405 Method Not Allowed: The method is not allowed for the requested URL.","http_code":405}`
	internal   = `{"error":"500 Internal Server Error: The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application.","http_code":500}`
	badIDs     = `{"message":"Invalid request","details":"ids must be UUIDs"}`
	okBodyJSON = `{"message":"OK"}`
)

func md5hex(s string) string { return fsutil.MD5Hex([]byte(s)) }
