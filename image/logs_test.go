package image

// Log offloading as the controller configures it: the rsyslog
// configuration Octavia renders (/etc/rsyslog.d/10-rsyslog.conf, from its
// LoggingJinjaTemplater) forwards what arrives on the image's haproxy log
// socket to the tenant and administrative log targets; here, UDP
// receivers on the host end of the management link.

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// syslogReceiver collects syslog datagrams.
type syslogReceiver struct {
	conn net.PacketConn
	mu   sync.Mutex
	msgs []string
}

func listenSyslog(t *testing.T, host string) *syslogReceiver {
	t.Helper()
	r := &syslogReceiver{}
	r.conn = testutil.ListenUDP(t, "udp", net.JoinHostPort(host, "0"), func(pkt []byte) {
		r.mu.Lock()
		r.msgs = append(r.msgs, string(pkt))
		r.mu.Unlock()
	})
	return r
}

func (r *syslogReceiver) Addr() string { return r.conn.LocalAddr().String() }

// await waits (bounded) for a message with the syslog priority's facility
// and containing text (any text when empty); it returns the message.
func (r *syslogReceiver) await(t *testing.T, d time.Duration, facility int, text string) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		r.mu.Lock()
		msgs := append([]string(nil), r.msgs...)
		r.mu.Unlock()
		for _, m := range msgs {
			pri, _, ok := strings.Cut(strings.TrimPrefix(m, "<"), ">")
			p, err := strconv.Atoi(pri)
			if ok && err == nil && p/8 == facility && strings.Contains(m, text) {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no syslog message of facility %d containing %q within %v (%d received): %q", facility, text, d, len(msgs), msgs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// renderRsyslog renders the controller's 10-rsyslog.conf for the targets
// with Octavia's own templater.
func renderRsyslog(t *testing.T, tenant, admin string) string {
	t.Helper()
	out := testutil.RenderRsyslog(t, testutil.RsyslogSpec{
		TenantTargets: []string{tenant}, AdminTargets: []string{admin}, Protocol: "UDP",
		AdminFacility: 1, UserFacility: 0,
	})
	if !strings.Contains(out, fmt.Sprintf("port=%q", portOf(t, tenant))) {
		t.Fatalf("rendered rsyslog configuration without the tenant target:\n%s", out)
	}
	return out
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}
