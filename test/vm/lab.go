package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"
)

// The lab's networks. Every address lives in a namespace the lab
// creates; nothing is added to the root namespace.
//
//	avm-<id>-hv   the hypervisor: qemu runs here, its taps join bridges
//	              that play Neutron networks; the controller sits on
//	              lb-mgmt-net here too (REST client, heartbeat and syslog
//	              receivers)
//	  brmgmt      lb-mgmt-net 198.18.10.0/24, controller 198.18.10.1,
//	              amphora i at 198.18.10.(11+i) (static, from the config drive)
//	  brvip       VIP network 198.51.100.0/24, VIP 198.51.100.100,
//	              amphora i's VRRP address 198.51.100.(11+i)
//	    `- veth - avm-<id>-cl  the client, 198.51.100.10
//	  brmem       member network 198.18.20.0/24, amphora i's port 198.18.20.(11+i)
//	    `- veth - avm-<id>-mb  members 198.18.20.21 and .22: HTTP :8081, UDP :5353
const (
	MgmtCIDR     = "198.18.10.0/24"
	ControllerIP = "198.18.10.1"
	VIPCIDR      = "198.51.100.0/24"
	VIPGateway   = "198.51.100.1"
	VIP          = "198.51.100.100"
	ClientIP     = "198.51.100.10"
	MemberCIDR   = "198.18.20.0/24"
	HTTPPort     = 8081
	UDPPort      = 5353

	HeartbeatPort   = 5555
	AdminLogPort    = 10514
	TenantLogPort   = 10515
	AgentPort       = 9443
	bridgeMgmt      = "brmgmt"
	bridgeVIP       = "brvip"
	bridgeMember    = "brmem"
	mgmtPrefixBits  = 24
	memberPrefixLen = 24
)

// MemberIPs are the pool members' addresses.
var MemberIPs = []string{"198.18.20.21", "198.18.20.22"}

// AmphoraMgmtIP is amphora i's address on lb-mgmt-net.
func AmphoraMgmtIP(i int) string { return fmt.Sprintf("198.18.10.%d", 11+i) }

// AmphoraVRRPIP is amphora i's own address on the VIP network.
func AmphoraVRRPIP(i int) string { return fmt.Sprintf("198.51.100.%d", 11+i) }

// AmphoraMemberIP is amphora i's address on the member network.
func AmphoraMemberIP(i int) string { return fmt.Sprintf("198.18.20.%d", 11+i) }

// Lab is the test's small cloud: namespaces, bridges, the controller's
// receivers, the pool members, and the guests started in it.
type Lab struct {
	ID    string
	Dir   string
	Image string // the pinned base image
	QEMU  string
	Accel AccelChoice

	HV, Client, Members *Netns

	Heartbeats *Receiver // UDP ControllerIP:HeartbeatPort
	AdminLogs  *Receiver // UDP ControllerIP:AdminLogPort
	TenantLogs *Receiver // UDP ControllerIP:TenantLogPort
	members    []*Member

	mu     sync.Mutex
	guests []*Guest
	closed bool
}

// LabOptions configure NewLab.
type LabOptions struct {
	Dir   string // work directory (kept by the caller)
	Image string // amphora qcow2
}

// RequireTools lists the programs a lab needs and says which are missing.
func RequireTools() error {
	var missing []string
	for _, p := range []string{"qemu-system-x86_64", "qemu-img", "ip", "ssh", "ssh-keygen", "/usr/bin/python3"} {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	if _, err := isoTool(); err != nil {
		missing = append(missing, "genisoimage")
	}
	if _, err := os.Stat("/usr/lib/python3/dist-packages/octavia/controller/worker/v2/tasks/compute_tasks.py"); err != nil {
		missing = append(missing, "python3-octavia")
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %v (scripts/deps.sh installs them)", missing)
	}
	return nil
}

// NewLab builds the networks, starts the receivers and the members, and
// chooses the accelerator. Close undoes everything, also after a partial
// failure.
func NewLab(ctx context.Context, o LabOptions) (l *Lab, err error) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return nil, err
	}
	l = &Lab{ID: randomHex(2), Dir: o.Dir, QEMU: qemu}
	defer func() {
		if err != nil {
			l.Close()
			l = nil
		}
	}()
	if l.Image, err = PinImage(o.Image, o.Dir); err != nil {
		return l, err
	}
	for _, x := range []struct {
		ns   **Netns
		name string
	}{{&l.HV, "hv"}, {&l.Client, "cl"}, {&l.Members, "mb"}} {
		n, err := CreateNetns("avm-" + l.ID + "-" + x.name)
		if err != nil {
			return l, err
		}
		*x.ns = n
	}
	hv := l.HV
	steps := [][]string{
		{"link", "add", bridgeMgmt, "type", "bridge"},
		{"link", "add", bridgeVIP, "type", "bridge"},
		{"link", "add", bridgeMember, "type", "bridge"},
		{"addr", "add", ControllerIP + "/24", "dev", bridgeMgmt},
		{"link", "add", "vcl", "type", "veth", "peer", "name", "eth0", "netns", l.Client.Name},
		{"link", "add", "vmb", "type", "veth", "peer", "name", "eth0", "netns", l.Members.Name},
		{"link", "set", "vcl", "master", bridgeVIP},
		{"link", "set", "vmb", "master", bridgeMember},
	}
	for _, br := range []string{bridgeMgmt, bridgeVIP, bridgeMember, "vcl", "vmb"} {
		steps = append(steps, []string{"link", "set", br, "up"})
	}
	for _, s := range steps {
		if err := hv.IP(s...); err != nil {
			return l, err
		}
	}
	if err := l.Client.IP("addr", "add", ClientIP+"/24", "dev", "eth0"); err != nil {
		return l, err
	}
	if err := l.Client.IP("link", "set", "eth0", "up"); err != nil {
		return l, err
	}
	for _, ip := range MemberIPs {
		if err := l.Members.IP("addr", "add", ip+"/24", "dev", "eth0"); err != nil {
			return l, err
		}
	}
	if err := l.Members.IP("link", "set", "eth0", "up"); err != nil {
		return l, err
	}
	for _, r := range []struct {
		dst  **Receiver
		port int
	}{{&l.Heartbeats, HeartbeatPort}, {&l.AdminLogs, AdminLogPort}, {&l.TenantLogs, TenantLogPort}} {
		rc, err := listenReceiver(hv, net.JoinHostPort(ControllerIP, strconv.Itoa(r.port)))
		if err != nil {
			return l, err
		}
		*r.dst = rc
	}
	for i, ip := range MemberIPs {
		m, err := startMember(l.Members, ip, fmt.Sprintf("member%d", i+1))
		if err != nil {
			return l, err
		}
		l.members = append(l.members, m)
	}
	l.Accel = DetectAccel(qemu)
	return l, nil
}

// Member returns pool member i (0 or 1).
func (l *Lab) Member(i int) *Member { return l.members[i] }

// track registers a guest for Close.
func (l *Lab) track(g *Guest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.guests = append(l.guests, g)
}

// Close kills every guest (by PID), stops the receivers and members and
// removes the namespaces (with whatever is left inside them). It may be
// called more than once.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	guests := l.guests
	l.mu.Unlock()
	for _, g := range guests {
		g.Kill()
	}
	for _, r := range []*Receiver{l.Heartbeats, l.AdminLogs, l.TenantLogs} {
		if r != nil {
			r.Close()
		}
	}
	for _, m := range l.members {
		m.Close()
	}
	var errs []error
	for _, n := range []*Netns{l.Client, l.Members, l.HV} {
		if n != nil {
			errs = append(errs, n.Delete())
		}
	}
	return errors.Join(errs...)
}

// Datagram is one UDP datagram a receiver got.
type Datagram struct {
	At   time.Time
	From *net.UDPAddr
	Data []byte
}

// Receiver records the UDP datagrams sent to one address.
type Receiver struct {
	Addr string
	conn net.PacketConn
	mu   sync.Mutex
	got  []Datagram
	more chan struct{}
	done chan struct{}
}

func listenReceiver(ns *Netns, addr string) (*Receiver, error) {
	conn, err := ns.ListenPacket("udp4", addr)
	if err != nil {
		return nil, fmt.Errorf("UDP receiver %s in %s: %w", addr, ns.Name, err)
	}
	r := &Receiver{Addr: addr, conn: conn, more: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		buf := make([]byte, 1<<16)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			ua, _ := from.(*net.UDPAddr)
			r.mu.Lock()
			r.got = append(r.got, Datagram{At: time.Now(), From: ua, Data: bytes.Clone(buf[:n])})
			close(r.more)
			r.more = make(chan struct{})
			r.mu.Unlock()
		}
	}()
	return r, nil
}

// Since returns the datagrams received from index i on, and the index
// after the last one.
func (r *Receiver) Since(i int) ([]Datagram, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i > len(r.got) {
		i = len(r.got)
	}
	return append([]Datagram(nil), r.got[i:]...), len(r.got)
}

// Len is the number of datagrams received so far.
func (r *Receiver) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// Wait blocks until a datagram arrives after index i or ctx ends.
func (r *Receiver) Wait(ctx context.Context, i int) error {
	r.mu.Lock()
	if len(r.got) > i {
		r.mu.Unlock()
		return nil
	}
	more := r.more
	r.mu.Unlock()
	select {
	case <-more:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the receiver.
func (r *Receiver) Close() {
	r.conn.Close()
	<-r.done
}

// Member is a pool member: an HTTP server (GET /index.html answers 418,
// what the Octavia templater's HTTP health monitor expects; any other
// path answers 200 with the member's name) and a UDP server answering
// every datagram with the member's name.
type Member struct {
	Name string
	IP   string
	srv  *http.Server
	udp  net.PacketConn
	mu   sync.Mutex
	down bool
	wg   sync.WaitGroup
	ns   *Netns
}

func startMember(ns *Netns, ip, name string) (*Member, error) {
	m := &Member{Name: name, IP: ip, ns: ns}
	ln, err := ns.Listen("tcp4", net.JoinHostPort(ip, strconv.Itoa(HTTPPort)))
	if err != nil {
		return nil, err
	}
	m.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/index.html" {
				m.mu.Lock()
				down := m.down
				m.mu.Unlock()
				if down {
					w.WriteHeader(http.StatusServiceUnavailable)
				} else {
					w.WriteHeader(http.StatusTeapot)
				}
				return
			}
			_, _ = w.Write([]byte(name))
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	m.wg.Add(1)
	go func() { defer m.wg.Done(); _ = m.srv.Serve(ln) }()
	if err := m.StartUDP(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// SetHealthy makes the HTTP health check pass or fail.
func (m *Member) SetHealthy(ok bool) {
	m.mu.Lock()
	m.down = !ok
	m.mu.Unlock()
}

// StartUDP (re)opens the member's UDP service.
func (m *Member) StartUDP() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.udp != nil {
		return nil
	}
	c, err := m.ns.ListenPacket("udp4", net.JoinHostPort(m.IP, strconv.Itoa(UDPPort)))
	if err != nil {
		return err
	}
	m.udp = c
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		buf := make([]byte, 2048)
		for {
			_, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteTo([]byte(m.Name), from)
		}
	}()
	return nil
}

// StopUDP closes the member's UDP service: datagrams get ICMP port
// unreachable, which the UDP health check reads as down.
func (m *Member) StopUDP() {
	m.mu.Lock()
	c := m.udp
	m.udp = nil
	m.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

func (m *Member) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if m.srv.Shutdown(ctx) != nil {
		m.srv.Close()
	}
	m.StopUDP()
	m.wg.Wait()
}
