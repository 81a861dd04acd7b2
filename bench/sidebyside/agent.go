package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// Agent is one agent implementation in its sandbox.
type Agent struct {
	Label   string // "reference" or "ours"
	Cmd     []string
	SB      *Sandbox
	Port    int
	HBPort  int // its heartbeat sink
	HBKey   string
	TLS     *tls.Config
	Conf    string   // its configuration file, inside the sandbox
	Prefix  []string // runs the agent through this (taskset)
	logPath string

	proc    *os.Process
	exited  chan struct{}
	started time.Time
}

// setupAgent writes the PKI files and the configuration (at conf, a path
// inside the sandbox) into the sandbox. Both agents get the same
// certificates, amphora id and heartbeat key, and the same file apart
// from bind_port and the heartbeat destination.
func setupAgent(label string, cmd []string, sb *Sandbox, pki *testutil.PKI, amphoraID, hbKey string, hbPort int, conf string) (*Agent, error) {
	port, err := freeTCPPort()
	if err != nil {
		return nil, err
	}
	for src, dst := range map[string]string{
		pki.ServerPEM: confDir + "/certs/server.pem",
		pki.ClientCA:  confDir + "/certs/client_ca.pem",
	} {
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(sb.Host(dst), data, 0o600); err != nil {
			return nil, err
		}
	}
	sections := map[string]map[string]string{
		"DEFAULT": {"debug": "False"},
		"haproxy_amphora": {
			"base_path": baseDir, "base_cert_dir": baseDir + "/certs",
			"bind_host": "127.0.0.1", "bind_port": strconv.Itoa(port),
			"haproxy_cmd": "/usr/sbin/haproxy", "respawn_count": "2", "respawn_interval": "2",
			"user_log_facility": "0", "administrative_log_facility": "1",
		},
		"health_manager": {
			"controller_ip_port_list": fmt.Sprintf("127.0.0.1:%d", hbPort),
			"heartbeat_interval":      "1", "heartbeat_key": hbKey,
		},
		"amphora_agent": {
			"agent_server_ca": confDir + "/certs/client_ca.pem", "agent_server_cert": confDir + "/certs/server.pem",
			"agent_server_network_dir": confDir + "/interfaces", "agent_request_read_timeout": "180",
			"amphora_id": amphoraID, "amphora_udp_driver": "keepalived_lvs", "agent_tls_protocol": "TLSv1.2",
			// Options of the Go agent; oslo.config ignores them in the
			// reference. The paths are the amphora defaults (sandboxed).
			"service_manager": "builtin", "network_namespace": nsName, "haproxy_user_group_config": ugFile,
			"systemd_unit_dir": unitDir,
		},
		"controller_worker": {"loadbalancer_topology": "SINGLE"},
	}
	if err := testutil.WriteConfig(sb.Host(conf), sections); err != nil {
		return nil, err
	}
	tc, err := clientTLS(pki, amphoraID)
	if err != nil {
		return nil, err
	}
	return &Agent{
		Label: label, Cmd: cmd, SB: sb, Port: port, HBPort: hbPort, HBKey: hbKey, TLS: tc, Conf: conf,
		logPath: filepath.Join(sb.Root, "state", label+"-agent.log"),
	}, nil
}

func freeTCPPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// clientTLS is the controller's side of the mTLS session.
func clientTLS(pki *testutil.PKI, amphoraID string) (*tls.Config, error) {
	ca, err := os.ReadFile(pki.ServerCA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("server CA: no certificate")
	}
	pem, err := os.ReadFile(pki.ClientPEM)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(pem, pem)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, ServerName: amphoraID, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

func (a *Agent) url(path string) string {
	return "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(a.Port)) + path
}

// Start starts the agent process (nsenter execs it in place, so the pid
// is the agent's) without waiting.
func (a *Agent) Start() error {
	if a.proc != nil {
		return fmt.Errorf("%s: already running", a.Label)
	}
	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	argv := append(append(slices.Clone(a.Prefix), a.Cmd...), "--config-file", a.Conf)
	cmd := a.SB.Command(false, argv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	a.started = time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: start: %w", a.Label, err)
	}
	a.proc = cmd.Process
	a.exited = make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(a.exited)
	return nil
}

// PID of the running agent (its tree root).
func (a *Agent) PID() int { return a.proc.Pid }

// WaitReady polls GET / over mTLS (a new connection per attempt, 2 ms
// apart) and returns the time from process start to the first 200.
func (a *Agent) WaitReady(ctx context.Context, limit time.Duration) (time.Duration, error) {
	tr := &http.Transport{TLSClientConfig: a.TLS, DisableKeepAlives: true, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	deadline := a.started.Add(limit)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-a.exited:
			return 0, fmt.Errorf("%s exited during start-up; log tail:\n%s", a.Label, a.LogTail())
		case <-ctx.Done():
			return 0, ctx.Err()
		default:
		}
		resp, err := client.Get(a.url("/"))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(a.started), nil
			}
			last = fmt.Errorf("GET /: %s", resp.Status)
		} else {
			last = err
		}
		time.Sleep(2 * time.Millisecond)
	}
	return 0, fmt.Errorf("%s not ready after %v (%v); log tail:\n%s", a.Label, limit, last, a.LogTail())
}

// Stop sends SIGTERM and waits up to 20 s, then kills what is left of
// the tree (pids collected before the signal).
func (a *Agent) Stop() {
	if a.proc == nil {
		return
	}
	tree := treeStats(a.proc.Pid)
	_ = a.proc.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(20 * time.Second):
	}
	for _, st := range tree {
		if now, err := readStat(st.PID); err == nil && now.StartTime == st.StartTime && now.State != 'Z' {
			_ = syscall.Kill(st.PID, syscall.SIGKILL)
		}
	}
	select {
	case <-a.exited:
	case <-time.After(10 * time.Second):
	}
	a.proc = nil
}

// LogTail is the end of the agent's output.
func (a *Agent) LogTail() string {
	data, _ := os.ReadFile(a.logPath)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// Session is one keep-alive mTLS client session, as the controller keeps
// per amphora; it counts the connections (TLS handshakes) it opened.
type Session struct {
	a        *Agent
	client   *http.Client
	tr       *http.Transport
	NewConns int
	TLSVer   uint16
}

func (a *Agent) Session() *Session {
	tr := &http.Transport{
		TLSClientConfig: a.TLS, MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1,
		IdleConnTimeout: 5 * time.Minute, DisableCompression: true,
	}
	return &Session{a: a, tr: tr, client: &http.Client{Transport: tr, Timeout: 120 * time.Second}}
}

func (s *Session) Close() { s.tr.CloseIdleConnections() }

// Do sends one request and reads the whole answer; it returns the status,
// the body and the elapsed time.
func (s *Session) Do(ctx context.Context, method, path string, body []byte) (int, []byte, time.Duration, error) {
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if !info.Reused {
			s.NewConns++
		}
	}}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), method, s.a.url(path), rd)
	if err != nil {
		return 0, nil, 0, err
	}
	t0 := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, time.Since(t0), err
	}
	out, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	el := time.Since(t0)
	if resp.TLS != nil {
		s.TLSVer = resp.TLS.Version
	}
	return resp.StatusCode, out, el, err
}
