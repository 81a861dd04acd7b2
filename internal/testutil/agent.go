package testutil

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// ModuleRoot returns the directory holding go.mod.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the module")
	}
	return filepath.Dir(mod), nil
}

// Binary returns the path of an amphora-agent binary built from this
// tree once per test process, with the race detector when the tests run
// with it ($AMPHORA_AGENT_BIN overrides).
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("AMPHORA_AGENT_BIN"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		root, err := ModuleRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "amphora-agent-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "amphora-agent")
		args := []string{"build", "-o", buildPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/amphora-agent")...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Options configure StartAgent.
type Options struct {
	Dir       string // sandbox directory (default: t.TempDir())
	AmphoraID string // default: a fixed test UUID
	BindHost  string // default 127.0.0.1
	// Options are extra ini settings, "section/option" -> value; they
	// override the defaults written by StartAgent.
	Options map[string]string
	// Env is added to the agent's environment.
	Env []string
	// Prefix runs the agent through a wrapper (nsenter, ip netns exec...).
	Prefix []string
}

// Agent is a running amphora-agent process.
type Agent struct {
	t          testing.TB
	Bin        string
	Dir        string
	AmphoraID  string
	Host       string
	Port       int
	PKI        *PKI
	ConfigFile string
	BasePath   string
	CertDir    string
	LogFile    string
	prefix     []string
	env        []string

	mu  sync.Mutex
	cmd *exec.Cmd
}

// DefaultAmphoraID is the amphora id tests use unless they need another.
const DefaultAmphoraID = "6e9fd1a2-1234-4cde-8f00-aabbccddeeff"

// WriteConfig renders an agent configuration file the way the Octavia
// controller's template does, with the overrides applied.
func WriteConfig(path string, sections map[string]map[string]string) error {
	order := []string{"DEFAULT", "haproxy_amphora", "health_manager", "amphora_agent", "controller_worker"}
	for s := range sections {
		found := false
		for _, o := range order {
			found = found || o == s
		}
		if !found {
			order = append(order, s)
		}
	}
	var b bytes.Buffer
	for _, s := range order {
		opts, ok := sections[s]
		if !ok {
			continue
		}
		fmt.Fprintf(&b, "[%s]\n", s)
		keys := make([]string, 0, len(opts))
		for k := range opts {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "%s = %s\n", k, opts[k])
		}
		b.WriteString("\n")
	}
	return os.WriteFile(path, b.Bytes(), 0o600)
}

// StartAgent writes a PKI and a configuration into a sandbox directory
// and starts the agent binary; it returns once GET / answers over mTLS.
// The process is stopped when the test ends.
func StartAgent(t testing.TB, o Options) *Agent {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.AmphoraID == "" {
		o.AmphoraID = DefaultAmphoraID
	}
	if o.BindHost == "" {
		o.BindHost = "127.0.0.1"
	}
	pki, err := NewPKI(filepath.Join(o.Dir, "pki"), o.AmphoraID)
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{
		t: t, Bin: Binary(t), Dir: o.Dir, AmphoraID: o.AmphoraID, Host: o.BindHost, Port: FreePort(t), PKI: pki,
		ConfigFile: filepath.Join(o.Dir, "amphora-agent.conf"),
		BasePath:   filepath.Join(o.Dir, "lib"),
		CertDir:    filepath.Join(o.Dir, "lib", "certs"),
		LogFile:    filepath.Join(o.Dir, "agent.log"),
		prefix:     o.Prefix,
		env:        o.Env,
	}
	// The agent's own copy of its server certificate (it rewrites it on rotation).
	serverPEM := filepath.Join(o.Dir, "server.pem")
	data, err := os.ReadFile(pki.ServerPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(serverPEM, data, 0o600); err != nil {
		t.Fatal(err)
	}
	sections := map[string]map[string]string{
		"DEFAULT": {"debug": "True"},
		"haproxy_amphora": {
			"base_path": a.BasePath, "base_cert_dir": a.CertDir, "bind_host": a.Host,
			"bind_port": strconv.Itoa(a.Port), "haproxy_cmd": "/usr/sbin/haproxy",
			"user_log_facility": "0", "administrative_log_facility": "1",
		},
		"health_manager": {"controller_ip_port_list": "", "heartbeat_interval": "10", "heartbeat_key": "insecure"},
		"amphora_agent": {
			"agent_server_ca": pki.ClientCA, "agent_server_cert": serverPEM,
			"agent_server_network_dir":   filepath.Join(o.Dir, "interfaces"),
			"agent_request_read_timeout": "180", "amphora_id": o.AmphoraID,
			"amphora_udp_driver": "keepalived_lvs", "agent_tls_protocol": "TLSv1.2",
			// Never the host's service manager, unit directory or
			// image files, even on a machine booted with systemd.
			"service_manager":           "builtin",
			"systemd_unit_dir":          filepath.Join(o.Dir, "units"),
			"haproxy_user_group_config": filepath.Join(o.Dir, "haproxy-user-group.conf"),
		},
		"controller_worker": {"loadbalancer_topology": "SINGLE"},
	}
	// Never touch the host's amphora-haproxy: every agent gets its own
	// data-plane namespace (the agent creates it at start), removed when
	// the test ends, after the agent has stopped.
	if _, ok := o.Options["amphora_agent/network_namespace"]; !ok {
		var rnd [4]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			t.Fatal(err)
		}
		ns := "tagent-" + hex.EncodeToString(rnd[:])
		sections["amphora_agent"]["network_namespace"] = ns
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", ns).Run() })
	}
	// A MAC not found yet pokes a PCI rescan: never the host's real one.
	rescan := filepath.Join(o.Dir, "pci-rescan")
	if err := os.WriteFile(rescan, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	sections["amphora_agent"]["pci_rescan_path"] = rescan
	for k, v := range o.Options {
		sec, opt, ok := strings.Cut(k, "/")
		if !ok {
			t.Fatalf("option %q is not section/option", k)
		}
		if sections[sec] == nil {
			sections[sec] = map[string]string{}
		}
		sections[sec][opt] = v
	}
	if err := WriteConfig(a.ConfigFile, sections); err != nil {
		t.Fatal(err)
	}
	a.Start()
	t.Cleanup(a.Stop)
	return a
}

// Start starts the process (again) and waits until it answers.
func (a *Agent) Start() {
	a.t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	logf, err := os.OpenFile(a.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		a.t.Fatal(err)
	}
	argv := append(append([]string{}, a.prefix...), a.Bin, "--config-file", a.ConfigFile)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), a.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		a.t.Fatal(err)
	}
	logf.Close()
	a.cmd = cmd
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	client := a.Client(a.PKI.ClientPEM)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			a.t.Fatalf("agent exited during start-up:\n%s", a.Log())
		default:
		}
		resp, err := client.Get(a.URL("/"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.t.Fatalf("agent did not answer within 20s:\n%s", a.Log())
}

// Stop sends SIGTERM and waits (bounded) for the process to exit.
func (a *Agent) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	p := a.cmd.Process
	a.cmd = nil
	_ = p.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		for i := 0; i < 200; i++ {
			if p.Signal(syscall.Signal(0)) != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
	}
	_ = p.Kill()
	// An agent built with -race reports data races on stderr and goes on.
	if log := a.Log(); strings.Contains(log, "WARNING: DATA RACE") {
		a.t.Errorf("the agent reported a data race:\n%s", log)
	}
}

// Kill ends the agent with SIGKILL, as a crash would (no shutdown code
// runs), and waits (bounded) until it is gone.
func (a *Agent) Kill() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	p := a.cmd.Process
	a.cmd = nil
	_ = p.Kill()
	for i := 0; i < 300; i++ {
		if p.Signal(syscall.Signal(0)) != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if log := a.Log(); strings.Contains(log, "WARNING: DATA RACE") {
		a.t.Errorf("the agent reported a data race:\n%s", log)
	}
}

// Restart stops and starts the agent with the same configuration.
func (a *Agent) Restart() {
	a.t.Helper()
	a.Stop()
	a.Start()
}

// PID is the agent's process id (0 when stopped).
func (a *Agent) PID() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil || a.cmd.Process == nil {
		return 0
	}
	return a.cmd.Process.Pid
}

// Log returns what the agent wrote to stderr so far.
func (a *Agent) Log() string {
	data, _ := os.ReadFile(a.LogFile)
	return string(data)
}

// URL builds https://host:port + path.
func (a *Agent) URL(path string) string {
	return "https://" + net.JoinHostPort(a.Host, strconv.Itoa(a.Port)) + path
}

// TLSConfig is the controller side of the mTLS session: certPEM as the
// client certificate ("" for none), the server CA, and the amphora id as
// the expected server name.
func (a *Agent) TLSConfig(certPEM string) *tls.Config {
	a.t.Helper()
	return a.PKI.ControllerTLS(a.t, a.AmphoraID, certPEM)
}

// Client returns an HTTP client presenting certPEM ("" for none).
func (a *Agent) Client(certPEM string) *http.Client {
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: a.TLSConfig(certPEM), DisableKeepAlives: true},
	}
}

// Do sends one request with the controller's client certificate and
// returns status, headers and body.
func (a *Agent) Do(method, path string, body []byte) (int, http.Header, []byte) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, a.URL(path), bytes.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	if body == nil {
		req.Body = nil
	}
	resp, err := a.Client(a.PKI.ClientPEM).Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		a.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, buf.Bytes()
}
