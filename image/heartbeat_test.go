package image

// The controller's side of the heartbeat: a UDP receiver on the host end
// of the management link, and Octavia's own status_message.unwrap_envelope
// (python3-octavia, /usr/bin/python3) to decode what arrives.

import (
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

type received struct {
	at  time.Time
	pkt []byte
	msg *heartbeat
}

// heartbeats receives and decodes the agent's heartbeats.
type heartbeats struct {
	key  string
	conn net.PacketConn
	dec  *testutil.OctaviaDecoder

	mu      sync.Mutex
	packets []*received
}

// listenHeartbeats starts a receiver on addr (ip:0) and the decoder.
func listenHeartbeats(t *testing.T, addr, key string) *heartbeats {
	t.Helper()
	h := &heartbeats{key: key}
	h.conn = testutil.ListenUDP(t, "udp", addr, func(pkt []byte) {
		h.mu.Lock()
		h.packets = append(h.packets, &received{at: time.Now(), pkt: pkt})
		h.mu.Unlock()
	})
	h.dec = testutil.NewOctaviaDecoder(t)
	return h
}

// Addr is the receiver's address, for controller_ip_port_list.
func (h *heartbeats) Addr() string { return h.conn.LocalAddr().String() }

func (h *heartbeats) decode(t *testing.T, pkt []byte) (*heartbeat, error) {
	t.Helper()
	raw, _, err := h.dec.Unwrap(t, pkt, h.key)
	if err != nil {
		return nil, err
	}
	var msg heartbeat
	if err := json.Unmarshal(raw, &msg); err != nil {
		return nil, fmt.Errorf("decoded heartbeat %s: %w", raw, err)
	}
	return &msg, nil
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
				msg, err := h.decode(t, p.pkt)
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

// heartbeat is a decoded heartbeat message (version 3).
type heartbeat = testutil.Heartbeat
