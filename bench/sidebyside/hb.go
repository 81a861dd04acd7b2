package main

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// beat is one heartbeat datagram as the sink decoded it.
type beat struct {
	At                        time.Time
	Size                      int
	Listeners, Pools, Members int
	Err                       error
}

// Sink stands in for the health manager: a UDP socket on 127.0.0.1 that
// checks and decodes every heartbeat (HMAC, zlib, JSON) so the benchmark
// knows the agent really reported the whole load balancer.
type Sink struct {
	conn *net.UDPConn
	key  string
	C    chan beat
	done chan struct{}
}

func newSink(key string) (*Sink, error) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	s := &Sink{conn: conn, key: key, C: make(chan beat, 1024), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 1<<16)
		for {
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			b := beat{At: time.Now(), Size: n}
			b.Listeners, b.Pools, b.Members, b.Err = decodeBeat(buf[:n], key)
			select {
			case s.C <- b:
			default: // nobody is listening now; the beat is dropped
			}
		}
	}()
	return s, nil
}

func (s *Sink) Port() int { return s.conn.LocalAddr().(*net.UDPAddr).Port }

// Drain drops the heartbeats received so far.
func (s *Sink) Drain() {
	for {
		select {
		case <-s.C:
		default:
			return
		}
	}
}

// Next waits for the next heartbeat.
func (s *Sink) Next(ctx context.Context, limit time.Duration) (beat, error) {
	select {
	case b := <-s.C:
		return b, b.Err
	case <-ctx.Done():
		return beat{}, ctx.Err()
	case <-time.After(limit):
		return beat{}, fmt.Errorf("no heartbeat within %v", limit)
	}
}

func (s *Sink) Close() {
	s.conn.Close()
	<-s.done
}

// decodeBeat checks Octavia's envelope (zlib JSON followed by the hex
// HMAC-SHA256 of it) and counts what the message reports.
func decodeBeat(pkt []byte, key string) (listeners, pools, members int, err error) {
	const macLen = 2 * sha256.Size
	if len(pkt) <= macLen {
		return 0, 0, 0, errors.New("heartbeat too short")
	}
	payload, mac := pkt[:len(pkt)-macLen], pkt[len(pkt)-macLen:]
	h := hmac.New(sha256.New, []byte(key))
	h.Write(payload)
	if !hmac.Equal([]byte(hex.EncodeToString(h.Sum(nil))), mac) {
		return 0, 0, 0, errors.New("heartbeat HMAC mismatch")
	}
	zr, err := zlib.NewReader(bytes.NewReader(payload))
	if err != nil {
		return 0, 0, 0, err
	}
	js, err := io.ReadAll(zr)
	if err != nil {
		return 0, 0, 0, err
	}
	var msg struct {
		Listeners map[string]json.RawMessage `json:"listeners"`
		Pools     map[string]struct {
			Members map[string]string `json:"members"`
		} `json:"pools"`
	}
	if err := json.Unmarshal(js, &msg); err != nil {
		return 0, 0, 0, err
	}
	for _, p := range msg.Pools {
		members += len(p.Members)
	}
	return len(msg.Listeners), len(msg.Pools), members, nil
}

// HAProxy is a load balancer's haproxy the benchmark runs where the
// amphora would run it (master-worker in the foreground, in the sandbox's
// amphora-haproxy namespace), so that its pid file and stats socket are
// where both agents look for them.
type HAProxy struct {
	proc   *os.Process
	exited chan struct{}
	log    string
}

// startHAProxy starts haproxy with the configuration, pid file and user
// group snippet given as paths inside the sandbox, and waits until the
// stats socket (a host path) answers and the pid file is written. prefix
// runs it through a command (taskset) that execs it.
func startHAProxy(ctx context.Context, sb *Sandbox, cfg, pidFile, sockHost, peer string, prefix ...string) (*HAProxy, error) {
	logPath := filepath.Join(sb.Root, "state", "haproxy-"+filepath.Base(filepath.Dir(cfg))+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	argv := append(prefix, "/usr/sbin/haproxy", "-W", "-db", "-f", cfg, "-f", ugFile, "-p", pidFile, "-L", peer)
	cmd := sb.Command(true, argv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	h := &HAProxy{proc: cmd.Process, exited: make(chan struct{}), log: logPath}
	go func() { _ = cmd.Wait(); close(h.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := statsQuery(sockHost, "show info")
		pidOK := false
		if data, rerr := os.ReadFile(sb.Host(pidFile)); rerr == nil {
			first, _, _ := strings.Cut(string(data), "\n")
			pidOK = strings.TrimSpace(first) == strconv.Itoa(h.proc.Pid)
		}
		if err == nil && pidOK {
			return h, nil
		}
		select {
		case <-h.exited:
			out, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("haproxy exited: %s", out)
		case <-ctx.Done():
			h.Stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			h.Stop()
			out, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("haproxy stats socket %s not answering after 30s (%v): %s", sockHost, err, out)
		}
	}
}

// Stop terminates the master (its worker follows), bounded.
func (h *HAProxy) Stop() {
	if h == nil || h.proc == nil {
		return
	}
	tree := treeStats(h.proc.Pid)
	_ = h.proc.Signal(syscall.SIGTERM)
	select {
	case <-h.exited:
	case <-time.After(10 * time.Second):
		for _, st := range tree {
			if now, err := readStat(st.PID); err == nil && now.StartTime == st.StartTime {
				_ = syscall.Kill(st.PID, syscall.SIGKILL)
			}
		}
		<-h.exited
	}
	h.proc = nil
}

// statsQuery sends one command to an haproxy stats socket.
func statsQuery(sock, cmd string) ([]byte, error) {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return nil, err
	}
	return io.ReadAll(c)
}

// runCmd runs a short helper command and returns its trimmed output.
func runCmd(ctx context.Context, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
