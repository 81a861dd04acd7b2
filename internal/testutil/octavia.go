package testutil

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
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

// octaviaDecoderScript decodes heartbeats with the controller's own
// code, one JSON request per line: {"pkt": base64, "key": "..."} ->
// {"ok": true, "msg": {...}, "order": [top-level keys]} or
// {"ok": false, "error": "<exception>: <text>"}. json.dumps writes msg
// exactly as it would write the message alone.
const octaviaDecoderScript = `
import base64, json, sys, warnings
warnings.filterwarnings('ignore')
from octavia.amphorae.backends.health_daemon import status_message
for line in sys.stdin:
    req = json.loads(line)
    try:
        obj = status_message.unwrap_envelope(base64.b64decode(req['pkt']), req['key'])
        out = {'ok': True, 'msg': obj, 'order': list(obj.keys())}
    except Exception as e:
        out = {'ok': False, 'error': '%s: %s' % (type(e).__name__, e)}
    sys.stdout.write(json.dumps(out) + '\n')
    sys.stdout.flush()
`

// OctaviaDecoder decodes heartbeats with the controller's own
// status_message.unwrap_envelope, in one long-lived /usr/bin/python3.
type OctaviaDecoder struct {
	mu     sync.Mutex // one request at a time
	in     io.WriteCloser
	out    *bufio.Reader
	stderr SyncBuffer
}

// NewOctaviaDecoder starts the decoder; it stops when the test ends. It
// skips the test when python3-octavia is not installed.
func NewOctaviaDecoder(t testing.TB) *OctaviaDecoder {
	t.Helper()
	RequireOctavia(t)
	d := &OctaviaDecoder{}
	cmd := exec.Command("/usr/bin/python3", "-c", octaviaDecoderScript)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + os.TempDir()}
	cmd.Stderr = &d.stderr
	var err error
	if d.in, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.out = bufio.NewReader(stdout)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.in.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return d
}

// Unwrap decodes pkt with key: the message as the controller's json.dumps
// writes it (its key order and spacing) and its top-level keys in order,
// or unwrap_envelope's exception ("InvalidHMACException: ..."). A broken
// decoder fails the test.
func (d *OctaviaDecoder) Unwrap(t testing.TB, pkt []byte, key string) (json.RawMessage, []string, error) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	req, err := json.Marshal(map[string]string{"pkt": base64.StdEncoding.EncodeToString(pkt), "key": key})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.in.Write(append(req, '\n')); err != nil {
		t.Fatalf("octavia decoder: %v (%s)", err, d.stderr.String())
	}
	line, err := d.out.ReadBytes('\n')
	if err != nil {
		t.Fatalf("octavia decoder: %v (%s)", err, d.stderr.String())
	}
	var res struct {
		OK    bool            `json:"ok"`
		Msg   json.RawMessage `json:"msg"`
		Order []string        `json:"order"`
		Error string          `json:"error"`
	}
	if err := json.Unmarshal(line, &res); err != nil {
		t.Fatalf("octavia decoder output %q: %v", line, err)
	}
	if !res.OK {
		return nil, nil, fmt.Errorf("unwrap_envelope: %s", res.Error)
	}
	return res.Msg, res.Order, nil
}
