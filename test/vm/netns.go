package vm

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// Netns is a named network namespace the harness created (ip netns add),
// with lo up. Everything inside it (taps, bridges, veths, addresses) goes
// away with it.
type Netns struct {
	Name string
}

// randomHex returns n random bytes as hex.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// CreateNetns creates namespace name and brings its lo up.
func CreateNetns(name string) (*Netns, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	n := &Netns{Name: name}
	if err := n.IP("link", "set", "lo", "up"); err != nil {
		_ = n.Delete()
		return nil, err
	}
	return n, nil
}

// IP runs "ip -n <ns> args...".
func (n *Netns) IP(args ...string) error {
	out, err := exec.Command("ip", append([]string{"-n", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip -n %s %s: %v: %s", n.Name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Command is a command running inside the namespace (ip netns exec).
func (n *Netns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Path is the namespace's bind mount.
func (n *Netns) Path() string { return filepath.Join("/run/netns", n.Name) }

// Exists reports whether the namespace is still there.
func (n *Netns) Exists() bool {
	_, err := os.Stat(n.Path())
	return err == nil
}

// Delete kills the processes left inside (by PID), then removes the
// namespace (testutil.DeleteNetNS, the tests' one way to do it).
func (n *Netns) Delete() error { return testutil.DeleteNetNS(n.Name) }

// Do runs f on a thread switched into the namespace with the agent's own
// nsthread.Do (through testutil.InNetNS): sockets f creates belong to it.
func (n *Netns) Do(f func() error) error { return testutil.InNetNS(n.Name, f) }

// DialContext opens a connection from inside the namespace.
func (n *Netns) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// ListenPacket opens a packet socket inside the namespace.
func (n *Netns) ListenPacket(network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := n.Do(func() error {
		var err error
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}

// Listen opens a stream listener inside the namespace.
func (n *Netns) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// HTTPClient dials inside the namespace, one connection per request.
func (n *Netns) HTTPClient(tlsConf *tls.Config, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:       n.DialContext,
			TLSClientConfig:   tlsConf,
			DisableKeepAlives: true,
		},
	}
}
