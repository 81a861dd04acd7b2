package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octavia-go/amphora-agent/internal/procfs"
	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// rsLoad is a client of the VIP at a steady, bounded rate: one request
// per tick over a new connection, until stopped or bounded.
type rsLoad struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	stop       chan struct{}
	done       chan struct{}
	began      time.Time
	ended      time.Time
}

func rsStartLoad(get func() error, every time.Duration, maxRequests int, maxDuration time.Duration) *rsLoad {
	l := &rsLoad{stop: make(chan struct{}), done: make(chan struct{}), began: time.Now()}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		deadline := time.After(maxDuration)
		for n := 0; n < maxRequests; n++ {
			select {
			case <-l.stop:
				return
			case <-deadline:
				return
			case <-tick.C:
			}
			if err := get(); err != nil {
				l.failed.Add(1)
				l.mu.Lock()
				if len(l.errs) < 10 {
					l.errs = append(l.errs, time.Now().Format("15:04:05.000")+" "+err.Error())
				}
				l.mu.Unlock()
			} else {
				l.ok.Add(1)
			}
		}
	}()
	return l
}

func (l *rsLoad) halt() {
	close(l.stop)
	<-l.done
	l.ended = time.Now()
}

// TestRestartInvisibleToDataPlane: an agent restart or upgrade never
// disturbs the running data plane (issue 13, defect 4). A load balancer
// on a plugged VIP serves a client at a steady rate while the agent is
// restarted 5 times, by SIGTERM and by SIGKILL; no request fails, haproxy
// keeps its pid, and `ip addr/route/rule` of the namespace are identical
// before and after, including an address, a route and a rule the test
// added itself. Before the fix the restore at start-up removed what the
// test added (this test failed on the ip comparison).
func TestRestartInvisibleToDataPlane(t *testing.T) {
	testutil.RequireRenderer(t)
	e := nwSetup(t, true)
	a := e.a
	lbID := testutil.NewUUID()
	rendered := nwRender(a, lbID, nwVIP4, nwMember4)
	defer rendered()
	res := a.Octavia(
		testutil.OctaviaCall{Call: "plug_vip", Args: []any{nwVIP4, nwNetInfo(e.vipMAC)}},
		testutil.OctaviaCall{Call: "plug_network", Args: []any{nwPortInfo(e.memMAC)}},
	)
	for i, r := range res {
		if !r.OK {
			t.Fatalf("plug %d: %s %s\n%s", i, r.Error, r.Message, a.Log())
		}
	}
	cfg, err := rendered()
	if err != nil {
		t.Fatal(err)
	}
	if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+a.AmphoraID+"/"+lbID+"/haproxy", []byte(cfg)); code != http.StatusAccepted {
		t.Fatalf("upload: %d %s", code, body)
	}
	if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+lbID+"/start", nil); code != http.StatusAccepted {
		t.Fatalf("start: %d %s\n%s", code, body, a.Log())
	}
	get := func() error {
		body, _, err := nwGet(e.vnet.Name, nwClient4, nwVIP4+":80", 3*time.Second)
		if err != nil {
			return err
		}
		if !strings.Contains(body, "remote="+nwAmpMem4+":") {
			return fmt.Errorf("member saw %q", body)
		}
		return nil
	}
	testutil.WaitFor(t, 20*time.Second, testutil.Succeeds("client -> VIP:80 -> member", get))

	// what others add to a running namespace: an operator, keepalived, a
	// debugging session
	for _, argv := range [][]string{
		{"addr", "add", "203.0.113.5/32", "dev", "lo"},
		{"addr", "add", "198.51.100.150/32", "dev", "eth1"},
		{"addr", "add", "198.18.2.99/24", "dev", "eth2"},
		{"route", "add", "198.18.77.0/24", "via", "198.18.2.254", "dev", "eth2", "proto", "static"},
		{"rule", "add", "from", "198.51.100.150", "lookup", "7", "prio", "31000"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", e.dp}, argv...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", argv, err, out)
		}
	}
	before := testutil.IPState(t, e.dp)
	pidFile := filepath.Join(a.BasePath, lbID, lbID+".pid")
	haproxyPID := procfs.ReadPID(pidFile)
	if !procfs.Alive(haproxyPID) {
		t.Fatalf("haproxy pid %d from %s is not alive", haproxyPID, pidFile)
	}

	// 20 requests a second, at most 6000 of them or 5 minutes
	load := rsStartLoad(get, 50*time.Millisecond, 6000, 5*time.Minute)
	var down time.Duration
	signals := []string{"SIGTERM", "SIGKILL", "SIGTERM", "SIGKILL", "SIGTERM"}
	for i, sig := range signals {
		time.Sleep(time.Second)
		began := time.Now()
		if sig == "SIGKILL" {
			a.Kill()
		} else {
			a.Stop()
		}
		a.Start()
		down += time.Since(began)
		t.Logf("restart %d (%s): the agent answered again after %v", i+1, sig, time.Since(began).Round(time.Millisecond))
	}
	time.Sleep(time.Second)
	load.halt()

	after := testutil.IPState(t, e.dp)
	elapsed := load.ended.Sub(load.began)
	ok, failed := load.ok.Load(), load.failed.Load()
	t.Logf("restarts: %d (%d SIGTERM, %d SIGKILL), agent unavailable %v in total; requests through the VIP: %d ok, %d failed over %v (%.1f/s); haproxy pid %d -> %d; ip addr/route/rule: %d lines, identical: %v",
		len(signals), 3, 2, down.Round(time.Millisecond), ok, failed, elapsed.Round(time.Millisecond), float64(ok+failed)/elapsed.Seconds(),
		haproxyPID, procfs.ReadPID(pidFile), strings.Count(before, "\n"), before == after)
	if failed != 0 {
		t.Errorf("%d requests failed during the restarts: %v", failed, load.errs)
	}
	if ok == 0 {
		t.Error("no request went through")
	}
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("the restarts changed the namespace (-before +after):\n%s", diff)
	}
	if got := procfs.ReadPID(pidFile); got != haproxyPID || !procfs.Alive(got) {
		t.Errorf("haproxy pid %d -> %d (alive %v)", haproxyPID, got, procfs.Alive(got))
	}
	if t.Failed() {
		t.Logf("agent log:\n%s", tail(a.Log(), 8000))
	}
	if _, err := os.Stat(filepath.Join(a.BasePath, "plugged_interfaces.converge")); !os.IsNotExist(err) {
		t.Errorf("a plug mark is left: %v", err)
	}
}
