package testutil

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RequireReferencePromProxy skips the test when the reference's
// Prometheus proxy (python3-octavia, with python3-psutil) cannot run.
func RequireReferencePromProxy(t testing.TB) {
	t.Helper()
	RequireOctavia(t)
	if _, err := os.Stat("/usr/lib/python3/dist-packages/octavia/cmd/prometheus_proxy.py"); err != nil {
		t.Skip("python3-octavia's prometheus_proxy.py is not installed")
	}
	if err := exec.Command("/usr/bin/python3", "-c", "import psutil").Run(); err != nil {
		t.Skip("python3-psutil is not installed (the reference proxy imports it)")
	}
}

// ReferencePromProxy is the reference's prometheus_proxy.py, run by
// test/interop/ref_prometheus_proxy.py.
type ReferencePromProxy struct {
	Cmd  *exec.Cmd
	Addr string // host:port it serves
	done chan struct{}
}

// StartReferencePromProxy starts the reference proxy reading exporterURL
// and serving host:port, through prefix (e.g. "ip netns exec NS"); it
// returns once it listens.
func StartReferencePromProxy(exporterURL, host string, port int, prefix ...string) (*ReferencePromProxy, error) {
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	argv := append(append([]string{}, prefix...), "/usr/bin/python3",
		filepath.Join(root, "test/interop/ref_prometheus_proxy.py"), exporterURL, host, strconv.Itoa(port))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + os.TempDir(), "PYTHONWARNINGS=ignore"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &ReferencePromProxy{Cmd: cmd, Addr: fmt.Sprintf("%s:%d", host, port), done: make(chan struct{})}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			if !ok && strings.TrimSpace(sc.Text()) == "ready" {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	go func() { _ = cmd.Wait(); close(r.done) }()
	select {
	case ok := <-ready:
		if ok {
			return r, nil
		}
	case <-time.After(60 * time.Second):
	}
	r.Stop()
	return nil, fmt.Errorf("reference prometheus proxy did not start: %s", stderr.String())
}

// Stop terminates the reference proxy (by pid) and waits for it.
func (r *ReferencePromProxy) Stop() {
	if r.Cmd.Process == nil {
		return
	}
	_ = r.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		_ = r.Cmd.Process.Kill()
		<-r.done
	}
}

// Sample is one series line of a Prometheus text exposition.
type Sample struct {
	Name   string
	Labels map[string]string
}

var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// ParseExposition returns the series lines of a text exposition
// (comments and blank lines skipped).
func ParseExposition(text string) []Sample {
	var out []Sample
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		s := Sample{Labels: map[string]string{}}
		name, rest, labelled := strings.Cut(line, "{")
		if labelled {
			end := strings.LastIndex(rest, "}")
			if end < 0 {
				end = len(rest)
			}
			for _, m := range labelPair.FindAllStringSubmatch(rest[:end], -1) {
				s.Labels[m[1]] = m[2]
			}
		} else {
			name, _, _ = strings.Cut(line, " ")
		}
		s.Name = name
		out = append(out, s)
	}
	return out
}

// MetricShape maps every metric name of an exposition to its sorted
// label keys ("name{key,key}"), the part two exporters of the same
// objects must agree on whatever the values.
func MetricShape(text string) []string {
	set := map[string]bool{}
	for _, s := range ParseExposition(text) {
		keys := make([]string, 0, len(s.Labels))
		for k := range s.Labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		set[s.Name+"{"+strings.Join(keys, ",")+"}"] = true
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// LabelValues collects the values of one label over the series whose
// name starts with prefix.
func LabelValues(samples []Sample, prefix, label string) map[string]bool {
	out := map[string]bool{}
	for _, s := range samples {
		if v, ok := s.Labels[label]; ok && strings.HasPrefix(s.Name, prefix) {
			out[v] = true
		}
	}
	return out
}
