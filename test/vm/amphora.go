package vm

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// Amphora is one amphora of the lab: the controller's view (id, PKI,
// management address) and the guest running it.
type Amphora struct {
	Lab      *Lab
	Index    int
	ID       string
	Topology string
	MgmtIP   string
	MgmtMAC  string
	Dir      string
	PKI      *testutil.PKI
	Request  *ServerRequest // what the controller asked Nova for
	Guest    *Guest
}

// AmphoraOptions configure CreateAmphora.
type AmphoraOptions struct {
	Index    int    // 0, 1: picks the addresses
	Topology string // SINGLE (default) or ACTIVE_STANDBY
	// HeartbeatInterval is [health_manager] heartbeat_interval on the
	// controller, seconds (default 2; Octavia's default is 10).
	HeartbeatInterval int
	// Detach starts qemu in its own session (it outlives the caller).
	Detach bool
}

// controllerConf are the octavia.conf settings of the lab's controller.
func (l *Lab) controllerConf(heartbeatInterval int) map[string]map[string]any {
	return map[string]map[string]any{
		"health_manager": {
			"controller_ip_port_list": []string{net.JoinHostPort(ControllerIP, strconv.Itoa(HeartbeatPort))},
			"heartbeat_key":           l.HeartbeatKey(),
			"heartbeat_interval":      heartbeatInterval,
		},
		"amphora_agent": {
			"admin_log_targets":  []string{net.JoinHostPort(ControllerIP, strconv.Itoa(AdminLogPort))},
			"tenant_log_targets": []string{net.JoinHostPort(ControllerIP, strconv.Itoa(TenantLogPort))},
			"log_protocol":       "UDP",
		},
		"controller_worker": {"amp_ssh_key_name": l.KeyName()},
		"certificates":      {"server_certs_key_passphrase": "insecure-key-do-not-use-this-key"},
	}
}

// HeartbeatKey is the controller's [health_manager] heartbeat_key.
func (l *Lab) HeartbeatKey() string { return "avm-insecure-" + l.ID }

// KeyName is the Nova key pair the controller boots amphorae with
// ([controller_worker] amp_ssh_key_name).
func (l *Lab) KeyName() string { return "avm-" + l.ID }

// SSHKey is the key pair's private key (created on first use).
func (l *Lab) SSHKey() (string, error) {
	key := filepath.Join(l.Dir, "id_ed25519")
	if _, err := os.Stat(key); err == nil {
		return key, nil
	}
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", l.KeyName(), "-f", key).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ssh-keygen: %v: %s", err, out)
	}
	return key, nil
}

// CreateAmphora does what the controller and Nova do for a new amphora:
// a server certificate for its id, the build request from the
// controller's own CertComputeCreate task, a config drive from it, and
// the guest booted on lb-mgmt-net.
func (l *Lab) CreateAmphora(ctx context.Context, o AmphoraOptions) (*Amphora, error) {
	if o.Topology == "" {
		o.Topology = "SINGLE"
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = 2
	}
	a := &Amphora{
		Lab: l, Index: o.Index, ID: testutil.NewUUID(), Topology: o.Topology,
		MgmtIP: AmphoraMgmtIP(o.Index), MgmtMAC: testutil.NeutronMAC(),
	}
	a.Dir = filepath.Join(l.Dir, fmt.Sprintf("amp%d", o.Index))
	if err := os.MkdirAll(a.Dir, 0o755); err != nil {
		return nil, err
	}
	var err error
	if a.PKI, err = testutil.NewPKI(filepath.Join(a.Dir, "pki"), a.ID); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	a.Request, err = RenderServerRequest(rctx, AmphoraCreate{
		AmphoraID: a.ID, Topology: o.Topology, ServerPEM: a.PKI.ServerPEM, ClientCA: a.PKI.ClientCA,
		Conf: l.controllerConf(o.HeartbeatInterval),
	})
	if err != nil {
		return nil, err
	}
	key, err := l.SSHKey()
	if err != nil {
		return nil, err
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		return nil, err
	}
	drive := &ConfigDrive{
		InstanceID: testutil.NewUUID(), Request: a.Request, PublicKey: strings.TrimSpace(string(pub)),
		Mgmt: MgmtPort{
			ID: testutil.NewUUID(), NetworkID: testutil.NewUUID(), MAC: a.MgmtMAC,
			Address: netip.PrefixFrom(netip.MustParseAddr(a.MgmtIP), mgmtPrefixBits),
		},
	}
	iso := filepath.Join(a.Dir, "config-drive.iso")
	if err := drive.Build(rctx, iso); err != nil {
		return nil, err
	}
	spec := GuestSpec{
		Name: fmt.Sprintf("a%d", o.Index), UUID: drive.InstanceID, Dir: a.Dir, Image: l.Image,
		ConfigDrive: iso, Accel: l.Accel, QEMU: l.QEMU, Netns: l.HV, Detach: o.Detach,
		NICs: []NIC{{ID: "mgmt", MAC: a.MgmtMAC, Bridge: bridgeMgmt}},
	}
	if err := a.Start(ctx, spec); err != nil {
		return nil, err
	}
	return a, nil
}

// Start boots the amphora's guest (again, after a power-off: same disk,
// same ports, as Nova's start does).
func (a *Amphora) Start(ctx context.Context, spec GuestSpec) error {
	g, err := StartGuest(ctx, spec)
	if err != nil {
		return err
	}
	a.Lab.track(g)
	a.Guest = g
	return nil
}

// Restart boots the guest again after qemu exited (power-off), with its
// disk and every port it had.
func (a *Amphora) Restart(ctx context.Context) error {
	if a.Guest.Running() {
		return errors.New("guest still running")
	}
	return a.Start(ctx, a.Guest.Spec)
}

// HotplugPort plugs a Neutron port into the running guest: the VIP
// network ("vip") or the member network ("mem").
func (a *Amphora) HotplugPort(ctx context.Context, network, mac string) error {
	br := map[string]string{"vip": bridgeVIP, "mem": bridgeMember}[network]
	if br == "" {
		return fmt.Errorf("no network %q (vip or mem)", network)
	}
	return a.Guest.HotplugNIC(ctx, NIC{ID: network, MAC: mac, Bridge: br})
}

// URL is the agent's API address for path.
func (a *Amphora) URL(path string) string {
	return "https://" + net.JoinHostPort(a.MgmtIP, strconv.Itoa(AgentPort)) + path
}

// TLSConfig is the controller's side of the mTLS session.
func (a *Amphora) TLSConfig() (*tls.Config, error) {
	ca, err := os.ReadFile(a.PKI.ServerCA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	pair, err := tls.LoadX509KeyPair(a.PKI.ClientPEM, a.PKI.ClientPEM)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, ServerName: a.ID, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// AwaitAnswer polls GET / over mTLS from lb-mgmt-net every 250 ms until
// the agent answers 200 or ctx ends, and returns when it answered.
func (a *Amphora) AwaitAnswer(ctx context.Context) (time.Time, error) {
	conf, err := a.TLSConfig()
	if err != nil {
		return time.Time{}, err
	}
	c := a.Lab.HV.HTTPClient(conf, 3*time.Second)
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL("/"), nil)
		if err != nil {
			return time.Time{}, err
		}
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Now(), nil
			}
			err = fmt.Errorf("GET / answered %d", resp.StatusCode)
		}
		last = err
		if !a.Guest.Running() {
			return time.Time{}, fmt.Errorf("guest %s exited (last: %v)", a.Guest.Spec.Name, last)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("agent at %s: %w (last: %v)", a.URL("/"), ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Octavia runs calls through the controller's REST client
// (AmphoraAPIClient1_0, test/interop/octavia_client.py) from lb-mgmt-net.
func (a *Amphora) Octavia(ctx context.Context, calls ...testutil.OctaviaCall) ([]testutil.OctaviaResult, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	req, err := json.Marshal(map[string]any{
		"host": a.MgmtIP, "port": AgentPort, "amphora_id": a.ID,
		"client_cert": a.PKI.ClientPEM, "server_ca": a.PKI.ServerCA,
		"retries": 40, "retry_interval": 1, "read_timeout": 120, "calls": calls,
	})
	if err != nil {
		return nil, err
	}
	cmd := a.Lab.HV.Command(ctx, "/usr/bin/python3", filepath.Join(root, "test/interop/octavia_client.py"))
	cmd.Stdin = bytes.NewReader(req)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + a.Dir}
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("octavia client: %v: %s", err, stderr.String())
	}
	var res []testutil.OctaviaResult
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("octavia client output %q: %w", out, err)
	}
	return res, nil
}

// SSH runs command on the amphora as an operator does: ssh with the load
// balancer's key pair to the image's default user, from lb-mgmt-net. It
// returns stdout; a failure carries stderr.
func (a *Amphora) SSH(ctx context.Context, command string) (string, error) {
	key, err := a.Lab.SSHKey()
	if err != nil {
		return "", err
	}
	cmd := a.Lab.HV.Command(ctx, "ssh", a.SSHArgs(key, command)...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("ssh %s %q: %w: %s", a.MgmtIP, command, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// SSHUser is the image's default user (cloud-init's default_user on
// Debian), which receives the key pair.
const SSHUser = "debian"

// SSHArgs are ssh's arguments to run command on the amphora (an
// interactive login when command is empty).
func (a *Amphora) SSHArgs(key, command string) []string {
	args := []string{"-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR", "-o", "ConnectTimeout=15", "-o", "BatchMode=yes",
		"-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=6",
		SSHUser + "@" + a.MgmtIP}
	if command != "" {
		args = append(args, "--", command)
	}
	return args
}

// AwaitSSH retries a trivial command over ssh until the guest's sshd
// accepts the key pair or ctx ends (sshd starts after the agent).
func (a *Amphora) AwaitSSH(ctx context.Context) error {
	var last error
	for {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := a.SSH(cctx, "true")
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("ssh to %s: %w (last: %v)", a.MgmtIP, ctx.Err(), last)
		case <-time.After(time.Second):
		}
	}
}
