package testutil

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// RenderSpec is the input of test/interop/render_haproxy.py: what the
// Octavia controller's combined-listeners templater renders an haproxy
// configuration from.
type RenderSpec struct {
	AmphoraID string `json:"amphora_id"`
	LBID      string `json:"lb_id"`
	BasePath  string `json:"base_path"`
	CertDir   string `json:"cert_dir"`
	VIP       string `json:"vip"`
	// HAProxyVersions is [major, minor] as the controller learnt them
	// from /1.0/info (default ["2", "6"]).
	HAProxyVersions []string         `json:"haproxy_versions,omitempty"`
	Topology        string           `json:"topology,omitempty"` // SINGLE (default) or ACTIVE_STANDBY
	Listeners       []RenderListener `json:"listeners"`
}

// RenderListener is one listener with its default pool.
type RenderListener struct {
	ID       string `json:"id"`
	Protocol string `json:"protocol"` // HTTP, TCP, TERMINATED_HTTPS or PROMETHEUS (no pool)
	Port     int    `json:"port"`
	PoolID   string `json:"pool_id"`
	// ConnectionLimit: 0 keeps the templater's sample value.
	ConnectionLimit int `json:"connection_limit,omitempty"`
	// Monitor nil keeps the sample's HTTP health monitor (GET
	// /index.html, expect 418, 1 s delay and timeout).
	Monitor *bool          `json:"monitor,omitempty"`
	Members []RenderMember `json:"members"`
}

// RenderMember is one pool member.
type RenderMember struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Port    int    `json:"port"`
	Enabled *bool  `json:"enabled,omitempty"`
	Weight  int    `json:"weight,omitempty"`
}

// RequireRenderer skips the test when Octavia's templater and sample data
// models (python3-octavia) are not installed.
func RequireRenderer(t testing.TB) {
	t.Helper()
	RequireOctavia(t)
	for _, p := range []string{
		"/usr/lib/python3/dist-packages/octavia/common/jinja/haproxy/combined_listeners/jinja_cfg.py",
		"/usr/lib/python3/dist-packages/octavia/tests/unit/common/sample_configs/sample_configs_combined.py",
	} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("python3-octavia's templater is not installed (%s missing)", p)
		}
	}
}

// RenderSpec returns a spec for this agent's paths and amphora id.
func (a *Agent) RenderSpec(lbID, vip string, listeners ...RenderListener) RenderSpec {
	return RenderSpec{
		AmphoraID: a.AmphoraID, LBID: lbID, BasePath: a.BasePath, CertDir: a.CertDir,
		VIP: vip, Listeners: listeners,
	}
}

// RenderHAProxy renders spec with Octavia's own templater (bounded by
// ctx) and returns the configuration text.
func RenderHAProxy(ctx context.Context, spec RenderSpec) (string, error) {
	out, err := runInterop(ctx, "render_haproxy.py", spec)
	return string(out), err
}

// runInterop runs one of the drivers of the controller's own code in
// test/interop with input as JSON on its standard input, and returns
// what it printed.
func runInterop(ctx context.Context, script string, input any) ([]byte, error) {
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	in, err := json.Marshal(input)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", filepath.Join(root, "test/interop", script))
	cmd.Stdin = bytes.NewReader(in)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + os.TempDir()}
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %s", script, err, stderr.Bytes())
	}
	return out, nil
}

// Render renders every spec concurrently (the templater takes seconds to
// start) and returns the configurations in order; it fails the test on
// any error.
func Render(t testing.TB, specs ...RenderSpec) []string {
	t.Helper()
	RequireRenderer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := make([]string, len(specs))
	errs := make([]error, len(specs))
	done := make(chan int, len(specs))
	for i := range specs {
		go func() {
			out[i], errs[i] = RenderHAProxy(ctx, specs[i])
			done <- i
		}()
	}
	for range specs {
		<-done
	}
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// RequireLVSRenderer skips the test when python3-octavia's LVS templater
// is not installed.
func RequireLVSRenderer(t testing.TB) {
	t.Helper()
	RequireOctavia(t)
	if _, err := os.Stat("/usr/lib/python3/dist-packages/octavia/common/jinja/lvs/jinja_cfg.py"); err != nil {
		t.Skip("python3-octavia's LVS templater is not installed")
	}
}

// RenderLVS renders keepalived LVS configurations with the controller's
// own templater (test/interop/render_lvs.py), all specs in one run; it
// fails the test on any error.
func RenderLVS(t testing.TB, specs ...map[string]any) [][]byte {
	t.Helper()
	RequireLVSRenderer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := runInterop(ctx, "render_lvs.py", specs)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	if err := json.Unmarshal(out, &texts); err != nil || len(texts) != len(specs) {
		t.Fatalf("render_lvs.py output: %v\n%s", err, out)
	}
	res := make([][]byte, len(texts))
	for i, text := range texts {
		res[i] = []byte(text)
	}
	return res
}
