package image

// The controller's side of the heartbeat: a UDP receiver on the host end
// of the management link, and Octavia's own status_message.unwrap_envelope
// (python3-octavia, /usr/bin/python3) to decode what arrives.

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// decoderScript decodes one heartbeat per input line:
// {"pkt": base64, "key": "..."} -> {"ok": true, "msg": {...}} or {"ok": false, "error": "..."}.
const decoderScript = `
import base64, json, sys, warnings
warnings.filterwarnings('ignore')
from octavia.amphorae.backends.health_daemon import status_message
for line in sys.stdin:
    req = json.loads(line)
    try:
        out = {'ok': True, 'msg': status_message.unwrap_envelope(base64.b64decode(req['pkt']), req['key'])}
    except Exception as e:
        out = {'ok': False, 'error': '%s: %s' % (type(e).__name__, e)}
    sys.stdout.write(json.dumps(out) + '\n')
    sys.stdout.flush()
`

// heartbeat is a decoded heartbeat message (version 3).
type heartbeat struct {
	ID        string `json:"id"`
	Seq       int64  `json:"seq"`
	Ver       int    `json:"ver"`
	Listeners map[string]struct {
		Status string `json:"status"`
	} `json:"listeners"`
	Pools map[string]struct {
		Status  string            `json:"status"`
		Members map[string]string `json:"members"`
	} `json:"pools"`
}

type received struct {
	at  time.Time
	pkt []byte
	msg *heartbeat
}

// heartbeats receives and decodes the agent's heartbeats.
type heartbeats struct {
	key  string
	conn net.PacketConn
	done chan struct{}

	mu      sync.Mutex
	packets []*received

	dec    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr bytes.Buffer
}

// listenHeartbeats starts a receiver on addr (ip:0) and the decoder.
func listenHeartbeats(t *testing.T, addr, key string) *heartbeats {
	t.Helper()
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("heartbeat receiver on %s: %v", addr, err)
	}
	h := &heartbeats{key: key, conn: conn, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		buf := make([]byte, 65536)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return // closed
			}
			h.mu.Lock()
			h.packets = append(h.packets, &received{at: time.Now(), pkt: bytes.Clone(buf[:n])})
			h.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-h.done })

	h.dec = exec.Command("/usr/bin/python3", "-c", decoderScript)
	h.dec.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + os.TempDir()}
	h.dec.Stderr = &h.stderr
	if h.in, err = h.dec.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := h.dec.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h.out = bufio.NewReader(stdout)
	if err := h.dec.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.in.Close()
		exited := make(chan struct{})
		go func() { _ = h.dec.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = h.dec.Process.Kill()
			<-exited
		}
	})
	return h
}

// Addr is the receiver's address, for controller_ip_port_list.
func (h *heartbeats) Addr() string { return h.conn.LocalAddr().String() }

func (h *heartbeats) decode(pkt []byte) (*heartbeat, error) {
	req, _ := json.Marshal(map[string]string{"pkt": base64.StdEncoding.EncodeToString(pkt), "key": h.key})
	if _, err := h.in.Write(append(req, '\n')); err != nil {
		return nil, fmt.Errorf("decoder: %w (%s)", err, h.stderr.String())
	}
	line, err := h.out.ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("decoder: %w (%s)", err, h.stderr.String())
	}
	var res struct {
		OK    bool       `json:"ok"`
		Msg   *heartbeat `json:"msg"`
		Error string     `json:"error"`
	}
	if err := json.Unmarshal(line, &res); err != nil {
		return nil, fmt.Errorf("decoder output %q: %w", line, err)
	}
	if !res.OK {
		return nil, fmt.Errorf("unwrap_envelope: %s", res.Error)
	}
	return res.Msg, nil
}

// await waits (bounded) for a heartbeat received after since that
// satisfies pred; a heartbeat Octavia cannot decode fails the test.
func (h *heartbeats) await(t *testing.T, since time.Time, d time.Duration, what string, pred func(*heartbeat) bool) *heartbeat {
	t.Helper()
	deadline := time.Now().Add(d)
	var last *heartbeat
	n := 0
	for {
		h.mu.Lock()
		ps := append([]*received(nil), h.packets...)
		h.mu.Unlock()
		for _, p := range ps {
			if p.at.Before(since) {
				continue
			}
			if p.msg == nil {
				msg, err := h.decode(p.pkt)
				if err != nil {
					t.Fatalf("heartbeat of %d bytes: %v", len(p.pkt), err)
				}
				p.msg = msg
				n++
			}
			last = p.msg
			if pred(p.msg) {
				return p.msg
			}
		}
		if time.Now().After(deadline) {
			js, _ := json.Marshal(last)
			t.Fatalf("%s: no such heartbeat within %v (%d decoded; last: %s)", what, d, n, js)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
