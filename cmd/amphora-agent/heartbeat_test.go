package main

// End-to-end tests of the heartbeat through the real agent binary: real
// haproxy (builtin supervisor) in a data-plane namespace the test
// creates, with member HTTP servers inside it on loopback addresses; the
// heartbeats go to UDP receivers on 127.0.0.1 and [::1] and are decoded
// with the Octavia controller's own status_message.unwrap_envelope
// (python3-octavia).

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// hbDecode unwraps pkt with key through Octavia's code; order is the
// message's top-level key order.
func hbDecode(t *testing.T, d *testutil.OctaviaDecoder, pkt []byte, key string) (*hbMessage, []string, error) {
	t.Helper()
	raw, order, err := d.Unwrap(t, pkt, key)
	if err != nil {
		return nil, nil, err
	}
	var msg hbMessage
	if err := json.Unmarshal(raw, &msg); err != nil {
		t.Fatalf("decoded heartbeat %s: %v", raw, err)
	}
	return &msg, order, nil
}

// hbPacket is one received heartbeat.
type hbPacket struct {
	data  []byte
	at    time.Time
	dest  string // which receiver got it
	epoch int    // agent process that sent it (incremented at each restart)
	// decoded
	msg   *hbMessage
	order []string
	key   string
}

// hbCollector receives heartbeats on several UDP sockets and decodes
// them with the keys it is told about.
type hbCollector struct {
	dec *testutil.OctaviaDecoder

	mu      sync.Mutex
	packets []*hbPacket
	epoch   int
	keys    []string // tried in order
}

func hbListen(t *testing.T, c *hbCollector, network, addr, name string) string {
	t.Helper()
	conn := testutil.ListenUDP(t, network, addr, func(pkt []byte) {
		c.mu.Lock()
		c.packets = append(c.packets, &hbPacket{data: pkt, at: time.Now(), dest: name, epoch: c.epoch})
		c.mu.Unlock()
	})
	return conn.LocalAddr().String()
}

func (c *hbCollector) setEpoch(e int) {
	c.mu.Lock()
	c.epoch = e
	c.mu.Unlock()
}

// decoded returns every packet received so far, decoded; a packet no
// known key opens fails the test.
func (c *hbCollector) decoded(t *testing.T) []*hbPacket {
	t.Helper()
	c.mu.Lock()
	ps := append([]*hbPacket(nil), c.packets...)
	keys := append([]string(nil), c.keys...)
	c.mu.Unlock()
	for _, p := range ps {
		if p.msg != nil {
			continue
		}
		var errs []string
		for _, k := range keys {
			msg, order, err := hbDecode(t, c.dec, p.data, k)
			if err == nil {
				p.msg, p.order, p.key = msg, order, k
				break
			}
			errs = append(errs, err.Error())
		}
		if p.msg == nil {
			t.Fatalf("heartbeat of %d bytes from %s decodes with none of the keys: %s", len(p.data), p.dest, strings.Join(errs, "; "))
		}
	}
	return ps
}

// await returns the first packet (at index from or later) satisfying
// pred, failing the test after d.
func (c *hbCollector) await(t *testing.T, d time.Duration, what string, from int, pred func(*hbPacket) bool) (*hbPacket, int) {
	t.Helper()
	deadline := time.Now().Add(d)
	var last *hbPacket
	for {
		ps := c.decoded(t)
		for i := from; i < len(ps); i++ {
			last = ps[i]
			if pred(ps[i]) {
				return ps[i], i
			}
		}
		if time.Now().After(deadline) {
			if last != nil {
				js, _ := json.Marshal(last.msg)
				t.Fatalf("%s: not seen within %v; last heartbeat: %s", what, d, js)
			}
			t.Fatalf("%s: no heartbeat at all within %v", what, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// totconns sums the totconns deltas of a listener over every heartbeat.
func (c *hbCollector) totconns(t *testing.T, listener string) (int64, int) {
	t.Helper()
	var sum int64
	ps := c.decoded(t)
	for _, p := range ps {
		sum += p.msg.Listeners[listener].Stats.TotConns
	}
	return sum, len(ps)
}

// hbRequests sends n GETs to url from inside the namespace, one
// connection each (one haproxy session each).
func hbRequests(t *testing.T, ns *testutil.NetNS, url string, n int) {
	t.Helper()
	c := ns.HTTPClient(nil, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		code, body, err := testutil.Get(ctx, c, url)
		if err != nil || code != http.StatusOK || body != "up" {
			t.Fatalf("request %d to %s: %d %q %v", i, url, code, body, err)
		}
	}
}

// TestHeartbeatThroughBinary: heartbeats of an agent running one load
// balancer, decoded by the controller's code: content, sequence, round
// robin over IPv4 and IPv6 destinations, member statuses, the key and
// interval pushed by PUT /1.0/config, statistics deltas that survive an
// agent restart without counting anything twice, and `heartbeat --print`.
func TestHeartbeatThroughBinary(t *testing.T) {
	t.Parallel()
	testutil.RequireNetAdmin(t)
	testutil.RequireBinary(t, "haproxy")
	testutil.RequireRenderer(t)
	dir := testutil.ShortDir(t, "hb") // short: unix socket paths below it

	dp := testutil.NewNetNS(t, "hb-dp") // kills haproxy (left running by the builtin supervisor) at the end
	up := testutil.StartMember(t, dp, "127.0.0.1:0", "up")
	var closedPort int
	if err := dp.Do(func() error {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		closedPort = l.Addr().(*net.TCPAddr).Port
		return l.Close()
	}); err != nil {
		t.Fatal(err)
	}
	_, upPortText, _ := net.SplitHostPort(up.Addr)
	upPort, _ := strconv.Atoi(upPortText)

	const vip, vipPort = "127.0.0.10", 8080
	lbID, listenerID, poolID := testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID()
	mUp, mDown, mMaint := testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID()
	disabled := false
	spec := testutil.RenderSpec{
		AmphoraID: testutil.DefaultAmphoraID, LBID: lbID,
		BasePath: filepath.Join(dir, "lib"), CertDir: filepath.Join(dir, "lib", "certs"), VIP: vip,
		Listeners: []testutil.RenderListener{{
			ID: listenerID, Protocol: "HTTP", Port: vipPort, PoolID: poolID, // sample HTTP monitor: GET /index.html, expect 418
			Members: []testutil.RenderMember{
				{ID: mUp, Address: "127.0.0.1", Port: upPort},
				{ID: mDown, Address: "127.0.0.1", Port: closedPort},
				{ID: mMaint, Address: "127.0.0.1", Port: upPort, Enabled: &disabled},
			},
		}},
	}
	renderDone := make(chan struct{})
	var lbConfig string
	var renderErr error
	go func() {
		defer close(renderDone)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		lbConfig, renderErr = testutil.RenderHAProxy(ctx, spec)
	}()
	defer func() { <-renderDone }()

	col := &hbCollector{dec: testutil.NewOctaviaDecoder(t), keys: []string{"insecure"}}
	dest4 := hbListen(t, col, "udp4", "127.0.0.1:0", "v4")
	dest6 := hbListen(t, col, "udp6", "[::1]:0", "v6")

	a := testutil.StartAgent(t, testutil.Options{
		Dir: dir,
		Options: map[string]string{
			"amphora_agent/network_namespace":         dp.Name,
			"amphora_agent/service_manager":           "builtin",
			"amphora_agent/haproxy_user_group_config": filepath.Join(dir, "haproxy-default-user-group.conf"),
			"health_manager/controller_ip_port_list":  dest4 + ", " + dest6,
			"health_manager/heartbeat_interval":       "1",
			"health_manager/heartbeat_key":            "insecure",
		},
	})
	<-renderDone
	if renderErr != nil {
		t.Fatal(renderErr)
	}
	if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+a.AmphoraID+"/"+lbID+"/haproxy", []byte(lbConfig)); code != http.StatusAccepted {
		t.Fatalf("upload: %d %s", code, body)
	}
	if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+lbID+"/start", nil); code != http.StatusAccepted {
		t.Fatalf("start: %d %s\n%s", code, body, a.Log())
	}

	poolKey := poolID + ":" + listenerID
	wantMembers := map[string]string{mUp: "UP", mDown: "DOWN", mMaint: "MAINT"}
	statusesOK := func(p *hbPacket) bool {
		l, ok := p.msg.Listeners[listenerID]
		pool := p.msg.Pools[poolKey]
		return ok && l.Status == "OPEN" && pool.Status == "UP" && cmp.Equal(wantMembers, pool.Members)
	}
	first, _ := col.await(t, 30*time.Second, "listener OPEN with members UP, DOWN, MAINT", 0, statusesOK)

	t.Run("content", func(t *testing.T) {
		if first.msg.Ver != 3 || first.msg.AmphoraID() != a.AmphoraID {
			t.Errorf("ver %d id %q, want 3 %q", first.msg.Ver, first.msg.AmphoraID(), a.AmphoraID)
		}
		if diff := cmp.Diff([]string{"id", "seq", "listeners", "pools", "ver"}, first.order); diff != "" {
			t.Errorf("key order (-want +got):\n%s", diff)
		}
		if len(first.msg.Listeners) != 1 || len(first.msg.Pools) != 1 {
			t.Errorf("listeners %v pools %v: want only the load balancer's (no internal frontend)", first.msg.Listeners, first.msg.Pools)
		}
		ps := col.decoded(t)
		if ps[0].msg.Seq != 0 {
			t.Errorf("first heartbeat has seq %d, want 0", ps[0].msg.Seq)
		}
		for i := 1; i < len(ps); i++ {
			if ps[i].msg.Seq <= ps[i-1].msg.Seq {
				t.Errorf("seq %d after %d", ps[i].msg.Seq, ps[i-1].msg.Seq)
			}
			if ps[i].dest == ps[i-1].dest {
				t.Errorf("heartbeats %d and %d both went to %s: no round robin", ps[i-1].msg.Seq, ps[i].msg.Seq, ps[i].dest)
			}
		}
		if _, _, err := hbDecode(t, col.dec, first.data, "wrong-key"); err == nil || !strings.Contains(err.Error(), "InvalidHMAC") {
			t.Errorf("heartbeat decoded with a wrong key: %v", err)
		}
	})

	// Statistics: N sessions, part of them while the agent is down, must
	// add up to N over all heartbeats of both agent processes.
	url := "http://" + net.JoinHostPort(vip, strconv.Itoa(vipPort)) + "/"
	const n1, n2, n3 = 12, 8, 5
	t.Run("totconns across an agent restart", func(t *testing.T) {
		hbRequests(t, dp, url, n1)
		_, idx := col.await(t, 10*time.Second, "first sessions counted", 0, func(p *hbPacket) bool {
			return p.msg.Listeners[listenerID].Stats.TotConns > 0
		})
		a.Stop()
		col.setEpoch(1)
		hbRequests(t, dp, url, n2)
		a.Start()
		hbRequests(t, dp, url, n3)
		p, _ := col.await(t, 15*time.Second, "heartbeat of the restarted agent", idx+1, func(p *hbPacket) bool { return p.epoch == 1 })
		if p.msg.Seq != 0 {
			t.Errorf("first heartbeat of the new process has seq %d, want a fresh sequence from 0", p.msg.Seq)
		}
		const want = n1 + n2 + n3
		deadline := time.Now().Add(15 * time.Second)
		for {
			sum, _ := col.totconns(t, listenerID)
			if sum == want || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		// and it stays there for a few more heartbeats
		_, count := col.totconns(t, listenerID)
		col.await(t, 10*time.Second, "three more heartbeats", count+2, func(*hbPacket) bool { return true })
		if sum, _ := col.totconns(t, listenerID); sum != want {
			for _, p := range col.decoded(t) {
				t.Logf("epoch %d seq %d totconns %d", p.epoch, p.msg.Seq, p.msg.Listeners[listenerID].Stats.TotConns)
			}
			t.Errorf("sum of totconns over all heartbeats = %d, want %d", sum, want)
		}
	})

	t.Run("heartbeat --print", func(t *testing.T) {
		before, _ := col.totconns(t, listenerID)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, a.Bin, "--config-file", a.ConfigFile, "heartbeat", "--print")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("heartbeat --print: %v\n%s", err, stderr.String())
		}
		out := stdout.String()
		if !strings.HasPrefix(out, "{\n  \"id\": ") {
			t.Errorf("not indented JSON starting with id:\n%s", out)
		}
		var msg hbMessage
		if err := json.Unmarshal(stdout.Bytes(), &msg); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		if msg.AmphoraID() != a.AmphoraID || msg.Ver != 3 || msg.Listeners[listenerID].Status != "OPEN" ||
			!cmp.Equal(wantMembers, msg.Pools[poolKey].Members) || msg.Pools[poolKey].Status != "UP" {
			t.Errorf("printed heartbeat:\n%s", out)
		}
		// printing consumed nothing: the next heartbeats still add up
		_, count := col.totconns(t, listenerID)
		col.await(t, 10*time.Second, "two more heartbeats", count+1, func(*hbPacket) bool { return true })
		if after, _ := col.totconns(t, listenerID); after != before {
			t.Errorf("totconns sum moved from %d to %d after --print without traffic", before, after)
		}
	})

	t.Run("PUT config changes key and interval", func(t *testing.T) {
		conf, err := os.ReadFile(a.ConfigFile)
		if err != nil {
			t.Fatal(err)
		}
		newConf := strings.Replace(string(conf), "heartbeat_key = insecure", "heartbeat_key = rotated-key", 1)
		newConf = strings.Replace(newConf, "heartbeat_interval = 1\n", "heartbeat_interval = 3\n", 1)
		if newConf == string(conf) || !strings.Contains(newConf, "heartbeat_interval = 3\n") {
			t.Fatalf("could not edit the configuration:\n%s", conf)
		}
		col.mu.Lock()
		col.keys = []string{"rotated-key", "insecure"}
		col.mu.Unlock()
		_, count := col.totconns(t, listenerID)
		res := a.Octavia(testutil.OctaviaCall{Call: "update_agent_config", Args: []any{newConf}})
		if !res[0].OK {
			t.Fatalf("update_agent_config: %s %s", res[0].Error, res[0].Message)
		}
		sent := time.Now()
		// Python's start-up took a few heartbeats; from the answer on,
		// at most one heartbeat (already under way) may use the old key.
		ps := col.decoded(t)
		for i := count; i < len(ps); i++ {
			if ps[i].at.After(sent) {
				break
			}
			count = i + 1
		}
		_, i1 := col.await(t, 10*time.Second, "heartbeat with the new key", count, func(p *hbPacket) bool { return p.key == "rotated-key" })
		col.await(t, 15*time.Second, "three heartbeats with the new key", i1+2, func(*hbPacket) bool { return true })
		ps = col.decoded(t)
		if i1-count > 1 {
			t.Errorf("%d heartbeats with the old key after the update answered", i1-count)
		}
		for i := i1 + 1; i < len(ps); i++ {
			if ps[i].key != "rotated-key" {
				t.Errorf("heartbeat %d uses the old key after one with the new key", ps[i].msg.Seq)
			}
			gap := ps[i].at.Sub(ps[i-1].at)
			if gap < 2500*time.Millisecond || gap > 6*time.Second {
				t.Errorf("heartbeats %d and %d are %v apart, want the new 3s interval", ps[i-1].msg.Seq, ps[i].msg.Seq, gap)
			}
		}
		if !statusesOK(ps[len(ps)-1]) {
			t.Errorf("statuses changed after the configuration update: %+v", ps[len(ps)-1].msg)
		}
	})
}

// hbMessage is a decoded heartbeat (version 3).
type hbMessage = testutil.Heartbeat

// TestBadControllerEntriesDoNotStopTheAgent (issue 13, defect 3): a
// controller_ip_port_list with entries that are not host:port used to
// keep the agent from starting and PUT /1.0/config from applying. Now the
// agent starts, logs the bad entries, heartbeats to the good one, `status`
// shows each entry's state, and PUT /1.0/config with a bad entry is
// applied too. (Names that do not resolve are covered in agent/heartbeat
// against a DNS server the test runs: here a lookup would leave the
// machine.)
func TestBadControllerEntriesDoNotStopTheAgent(t *testing.T) {
	t.Parallel()
	col := &hbCollector{dec: testutil.NewOctaviaDecoder(t), keys: []string{"insecure"}}
	good := hbListen(t, col, "udp4", "127.0.0.1:0", "good")
	other := hbListen(t, col, "udp4", "127.0.0.1:0", "other")
	a := testutil.StartAgent(t, testutil.Options{
		Options: map[string]string{
			"health_manager/controller_ip_port_list": "no-port-here, [::1]:notaport, " + good,
			"health_manager/heartbeat_interval":      "1",
			"health_manager/heartbeat_key":           "insecure",
		},
	})
	col.await(t, 15*time.Second, "a heartbeat at the good entry", 0, func(p *hbPacket) bool { return p.dest == "good" })
	for _, want := range []string{`entry unusable, heartbeats skip it" problem="entry \"no-port-here\" is not host:port"`, `"controller address skipped" dest=[::1]:notaport`} {
		if !strings.Contains(a.Log(), want) {
			t.Errorf("agent log lacks %s:\n%s", want, a.Log())
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, a.Bin, "--config-file", a.ConfigFile, "status").CombinedOutput()
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	lines := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 2 {
			lines[f[0]] = strings.Join(f[1:], " ")
		}
	}
	for entry, want := range map[string]string{
		"no-port-here":   `SKIPPED: entry "no-port-here" is not host:port`,
		"[::1]:notaport": `SKIPPED: entry "[::1]:notaport": port "notaport" is not a number between 1 and 65535`,
		good:             "ok (" + good + ")",
	} {
		if lines[entry] != want {
			t.Errorf("status: %s %q, want %q:\n%s", entry, lines[entry], want, out)
		}
	}

	// The running sender's counts (heartbeat_stats.json, written after
	// the first heartbeat) show the entries it skipped.
	if !regexp.MustCompile(`controller entries skipped \(malformed, unresolved\)\s+[1-9]`).Match(out) ||
		!regexp.MustCompile(`sender\s+pid \d+ \(running\)`).Match(out) {
		t.Errorf("status lacks the running sender's counts:\n%s", out)
	}

	cfg, err := os.ReadFile(a.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	next := strings.Replace(string(cfg), "no-port-here, [::1]:notaport, "+good, "still-no-port, "+other, 1)
	if st, _, body := a.Do(http.MethodPut, "/1.0/config", []byte(next)); st != http.StatusAccepted {
		t.Fatalf("PUT /1.0/config with a bad entry: %d %s", st, body)
	}
	_, idx := col.await(t, 15*time.Second, "a heartbeat at the new entry", 0, func(p *hbPacket) bool { return p.dest == "other" })
	col.await(t, 15*time.Second, "heartbeats going on", idx+1, func(p *hbPacket) bool { return p.dest == "other" })
}
