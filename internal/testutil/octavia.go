package testutil

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// OctaviaCall is one call of the Octavia controller's REST client
// (AmphoraAPIClient1_0 method name and its arguments after the amphora).
type OctaviaCall struct {
	Call string `json:"call"`
	Args []any  `json:"args,omitempty"`
}

// OctaviaResult is the outcome of one OctaviaCall.
type OctaviaResult struct {
	OK      bool            `json:"ok"`
	Result  json.RawMessage `json:"result"`
	Error   string          `json:"error"`
	Message string          `json:"message"`
}

// RequireOctavia skips the test when Debian's python3-octavia (the
// controller's own client code) is not installed.
func RequireOctavia(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/usr/lib/python3/dist-packages/octavia/amphorae/drivers/haproxy/rest_api_driver.py"); err != nil {
		t.Skip("python3-octavia is not installed (make deps installs it): the interop test needs the controller's client")
	}
}

// Octavia runs calls through the controller's REST client against a.
func (a *Agent) Octavia(calls ...OctaviaCall) []OctaviaResult {
	a.t.Helper()
	RequireOctavia(a.t)
	root, err := ModuleRoot()
	if err != nil {
		a.t.Fatal(err)
	}
	req, err := json.Marshal(map[string]any{
		"host": a.Host, "port": a.Port, "amphora_id": a.AmphoraID,
		"client_cert": a.PKI.ClientPEM, "server_ca": a.PKI.ServerCA,
		"retries": 3, "retry_interval": 1, "calls": calls,
	})
	if err != nil {
		a.t.Fatal(err)
	}
	cmd := exec.Command("/usr/bin/python3", filepath.Join(root, "test/interop/octavia_client.py"))
	cmd.Stdin = bytes.NewReader(req)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + a.Dir}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		a.t.Fatalf("octavia client: %v\n%s", err, stderr.String())
	}
	var res []OctaviaResult
	if err := json.Unmarshal(out, &res); err != nil {
		a.t.Fatalf("octavia client output: %v\n%s\n%s", err, out, stderr.String())
	}
	return res
}
