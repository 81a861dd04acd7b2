package testutil

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RsyslogSpec is the input of test/interop/render_rsyslog.py: the
// controller's [amphora_agent] log offloading options.
type RsyslogSpec struct {
	AdminTargets    []string `json:"admin_log_targets,omitempty"`
	TenantTargets   []string `json:"tenant_log_targets,omitempty"`
	Protocol        string   `json:"log_protocol,omitempty"` // UDP (default) or TCP
	AdminFacility   int      `json:"administrative_log_facility"`
	UserFacility    int      `json:"user_log_facility"`
	ForwardAllLogs  bool     `json:"forward_all_logs,omitempty"`
	DisableLocalLog bool     `json:"disable_local_log_storage,omitempty"`
}

// RenderRsyslog renders 10-rsyslog.conf with the controller's logging
// templater; it skips the test when python3-octavia is not installed.
func RenderRsyslog(t testing.TB, spec RsyslogSpec) string {
	t.Helper()
	RequireOctavia(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := runInterop(ctx, "render_rsyslog.py", spec)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// Rsyslog is a private rsyslogd (Debian's) a test runs: its own
// configuration, pid file, work directory and unix sockets under Dir; it
// never touches the host's /dev/log or configuration.
type Rsyslog struct {
	Dir     string
	Conf    string
	PIDFile string
	t       testing.TB
	prefix  []string
	cmd     *exec.Cmd
	exited  chan struct{}
	sockets []string
}

// RsyslogOptions configure StartRsyslog.
type RsyslogOptions struct {
	// Sockets are unix datagram sockets rsyslog listens on (imuxsock,
	// no rate limit): the agent's syslog_socket, haproxy's log socket.
	Sockets []string
	// Include is configuration appended as is (e.g. the rendered
	// 10-rsyslog.conf).
	Include string
	// Prefix runs rsyslogd through a wrapper ("ip netns exec NS" so its
	// forwarding leaves from a test namespace).
	Prefix []string
}

// StartRsyslog writes the configuration and starts rsyslogd in the
// foreground; it returns once every socket exists. It is stopped (by
// pid) when the test ends. Skips when rsyslogd is not installed.
func StartRsyslog(t testing.TB, dir string, o RsyslogOptions) *Rsyslog {
	t.Helper()
	RequireBinary(t, "rsyslogd")
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, "global(workDirectory=%q)\n", work)
	conf.WriteString("module(load=\"imuxsock\" SysSock.Use=\"off\")\n")
	for _, s := range o.Sockets {
		fmt.Fprintf(&conf, "input(type=\"imuxsock\" Socket=%q CreatePath=\"on\" RateLimit.Interval=\"0\")\n", s)
	}
	// everything also to a local file, with the facility, for checks
	// and failure messages: "local1.info amphora-agent[812]: level=..."
	conf.WriteString("template(name=\"testLocal\" type=\"string\" string=\"%syslogfacility-text%.%syslogseverity-text% %syslogtag%%msg%\\n\")\n")
	fmt.Fprintf(&conf, "*.* action(type=\"omfile\" file=%q template=\"testLocal\")\n", filepath.Join(dir, "all.log"))
	conf.WriteString(o.Include)
	conf.WriteString("\n")
	r := &Rsyslog{Dir: dir, Conf: filepath.Join(dir, "rsyslog.conf"), PIDFile: filepath.Join(dir, "rsyslogd.pid"),
		t: t, prefix: o.Prefix, sockets: o.Sockets}
	if err := os.WriteFile(r.Conf, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("rsyslogd", "-N1", "-f", r.Conf).CombinedOutput(); err != nil {
		t.Fatalf("rsyslogd -N1 rejects the configuration: %v\n%s\n%s", err, out, conf.String())
	}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Start starts rsyslogd (again) and waits for its sockets.
func (r *Rsyslog) Start() {
	t := r.t
	t.Helper()
	for _, s := range r.sockets {
		_ = os.Remove(s) // a stale one would pass the readiness check
	}
	logf, err := os.OpenFile(filepath.Join(r.Dir, "rsyslogd.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	argv := append(append([]string{}, r.prefix...), "rsyslogd", "-n", "-f", r.Conf, "-i", r.PIDFile)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.cmd, r.exited = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(r.exited)
	deadline := time.Now().Add(15 * time.Second)
	for {
		ready := true
		for _, s := range r.sockets {
			if _, err := os.Stat(s); err != nil {
				ready = false
			}
		}
		if ready {
			return
		}
		select {
		case <-r.exited:
			out, _ := os.ReadFile(filepath.Join(r.Dir, "rsyslogd.out"))
			t.Fatalf("rsyslogd exited:\n%s", out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("rsyslogd did not create its sockets within 15 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop terminates rsyslogd and waits for it (a stopped one stays
// stopped).
func (r *Rsyslog) Stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
	r.cmd = nil
}

// LocalLog is what rsyslogd wrote to its catch-all file so far, one
// record a line: "<facility>.<severity> <tag><message>".
func (r *Rsyslog) LocalLog() string {
	data, _ := os.ReadFile(filepath.Join(r.Dir, "all.log"))
	return string(data)
}

// SyslogMessage is one datagram a log server received.
type SyslogMessage struct {
	Raw      string
	Facility int // from <PRI>
	Severity int
	At       time.Time
}

// LogServer is a UDP syslog receiver inside a test namespace.
type LogServer struct {
	Addr string
	mu   sync.Mutex
	msgs []SyslogMessage
}

// StartLogServer receives syslog datagrams on addr inside ns until the
// test ends.
func StartLogServer(t testing.TB, ns *NetNS, addr string) *LogServer {
	t.Helper()
	var conn net.PacketConn
	if err := ns.Do(func() error {
		var err error
		conn, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatalf("log server on %s in %s: %v", addr, ns.Name, err)
	}
	s := &LogServer{Addr: conn.LocalAddr().String()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<16)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			m := SyslogMessage{Raw: string(buf[:n]), Facility: -1, Severity: -1, At: time.Now()}
			if rest, ok := strings.CutPrefix(m.Raw, "<"); ok {
				if pri, _, ok := strings.Cut(rest, ">"); ok {
					if v, err := strconv.Atoi(pri); err == nil {
						m.Facility, m.Severity = v/8, v%8
					}
				}
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, m)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return s
}

// Messages returns what arrived so far.
func (s *LogServer) Messages() []SyslogMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SyslogMessage(nil), s.msgs...)
}

// Find returns the first message satisfying pred, if any.
func (s *LogServer) Find(pred func(SyslogMessage) bool) (SyslogMessage, bool) {
	for _, m := range s.Messages() {
		if pred(m) {
			return m, true
		}
	}
	return SyslogMessage{}, false
}
