package haproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite the testdata/ captures from a live haproxy")

// Object ids of the capture fixture (testutil's statistics fixture).
const (
	fxL1 = testutil.FixtureL1
	fxL2 = testutil.FixtureL2
	fxP1 = testutil.FixtureP1
	fxP2 = testutil.FixtureP2
	fxM  = testutil.FixtureMember // + 1..6
	fxM2 = testutil.FixtureTCPMember

	// fxRequest is the one HTTP request sent through listener 1 before the
	// capture; its length is the frontend's bin.
	fxRequest = "GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n"
)

// fixtureStatuses is what the fixture reports once health checks settled.
func fixtureStatuses() *StatsReport {
	r := &StatsReport{Listeners: map[string]ListenerStats{fxL1: {Status: "OPEN"}, fxL2: {Status: "OPEN"}}, Pools: map[string]PoolStatus{}}
	for pool, members := range testutil.FixtureMembers() {
		r.Pools[pool] = PoolStatus{Status: "UP", Members: members}
	}
	return r
}

// statusesOnly clears the counters, which vary from run to run.
func statusesOnly(r *StatsReport) *StatsReport {
	out := &StatsReport{Listeners: map[string]ListenerStats{}, Pools: r.Pools}
	for k, l := range r.Listeners {
		out.Listeners[k] = ListenerStats{Status: l.Status}
	}
	return out
}

// startFixture runs the statistics fixture, read with this package's
// client.
func startFixture(t testing.TB) *testutil.StatsFixture {
	t.Helper()
	return testutil.StartStatsFixture(t, func(ctx context.Context, sock string) (map[string]map[string]string, error) {
		r, err := NewStatsClient(sock).Report(ctx)
		if err != nil {
			return nil, err
		}
		out := map[string]map[string]string{}
		for pool, p := range r.Pools {
			out[pool] = p.Members
		}
		return out, nil
	})
}

// TestLiveStats runs the client against a real haproxy 2.6 on the
// user-level socket Octavia renders. With -update it also rewrites the
// captures under testdata/ that the table tests read.
func TestLiveStats(t *testing.T) {
	f := startFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := NewStatsClient(f.UserSock)

	before, err := c.Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// One request through the HTTP listener. haproxy counts HTTP bytes in
	// its internal (HTX) representation, so only growth is checked here.
	if resp := testutil.RawHTTP(t, f.FE1, fxRequest); !bytes.HasPrefix(resp, []byte("HTTP/1.1 200")) {
		t.Fatalf("request through haproxy: %q", resp)
	}
	// The same request through the TCP listener: raw bytes, counted exactly.
	resp := testutil.RawHTTP(t, f.FE2, fxRequest)
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 200")) {
		t.Fatalf("request through haproxy: %q", resp)
	}
	// Hold one TCP session on listener 2 for the scur column.
	hold, err := net.Dial("tcp", f.FE2)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()

	var after *StatsReport
	testutil.WaitFor(t, 5*time.Second, func() (bool, string) {
		after, err = c.Report(ctx)
		if err != nil {
			return false, err.Error()
		}
		l1, l2 := after.Listeners[fxL1], after.Listeners[fxL2]
		return l1.Stot == before.Listeners[fxL1].Stot+1 && l1.Bout > before.Listeners[fxL1].Bout &&
				l2.Stot == before.Listeners[fxL2].Stot+2 && l2.Scur == 1 && l2.Bout > before.Listeners[fxL2].Bout,
			fmt.Sprintf("listeners %+v", after.Listeners)
	})
	if d := cmp.Diff(fixtureStatuses(), statusesOnly(after)); d != "" {
		t.Errorf("statuses (-want +got):\n%s", d)
	}
	if l1 := after.Listeners[fxL1]; l1.Bin <= before.Listeners[fxL1].Bin {
		t.Errorf("listener 1 bin did not grow: %+v", l1)
	}
	l2 := after.Listeners[fxL2]
	if got, want := l2.Bin-before.Listeners[fxL2].Bin, int64(len(fxRequest)); got != want {
		t.Errorf("listener 2 bin grew by %d, want %d (request size)", got, want)
	}
	if got, want := l2.Bout-before.Listeners[fxL2].Bout, int64(len(resp)); got != want {
		t.Errorf("listener 2 bout grew by %d, want %d (response size)", got, want)
	}

	info, err := c.ShowInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info["Name"] != "HAProxy" {
		t.Errorf("show info Name = %q", info["Name"])
	}
	if up, err := info.UptimeSec(); err != nil || up > 60 {
		t.Errorf("UptimeSec = %d, %v; want a few seconds", up, err)
	}

	state, err := c.ShowServersState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(state), "\n"), "\n")
	if lines[0] != "1" || !strings.HasPrefix(lines[1], "# be_id be_name srv_id srv_name") || len(lines) != 2+8 {
		t.Errorf("servers state:\n%s", state)
	}
	if !strings.HasSuffix(string(state), "\n") || strings.HasSuffix(string(state), "\n\n") {
		t.Errorf("servers state must end with exactly one newline: %q", state[len(state)-10:])
	}

	if *update {
		capture(t, ctx, f)
	}
}

// capture writes the raw answers the table tests use.
func capture(t *testing.T, ctx context.Context, f *testutil.StatsFixture) {
	files := []struct{ sock, cmd, name string }{
		{f.UserSock, cmdShowStat, "show_stat_2.6.csv"},
		{f.AdminSock, "show stat -1 -1 -1", "show_stat_all_admin_2.6.csv"},
		{f.UserSock, cmdShowInfo, "show_info_2.6.txt"},
		{f.UserSock, cmdShowServersState, "show_servers_state_2.6.txt"},
	}
	for _, fl := range files {
		out, err := NewStatsClient(fl.sock).Query(ctx, fl.cmd)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", fl.name), out, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("captured %q into testdata/%s (%d bytes)", fl.cmd, fl.name, len(out))
	}
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// captureReport is the report of the capture in testdata: one request
// through each listener (on the TCP listener 2, bin = len(fxRequest) and
// bout = the member's answer), then one session held open on listener 2.
func captureReport() *StatsReport {
	r := fixtureStatuses()
	r.Listeners[fxL1] = ListenerStats{Status: "OPEN", Bin: 39, Bout: 121, Scur: 0, Stot: 1, Ereq: 0}
	r.Listeners[fxL2] = ListenerStats{Status: "OPEN", Bin: 47, Bout: 137, Scur: 1, Stot: 2, Ereq: 0}
	return r
}

func TestSummarizeCaptures(t *testing.T) {
	for _, name := range []string{"show_stat_2.6.csv", "show_stat_all_admin_2.6.csv"} {
		t.Run(name, func(t *testing.T) {
			tab, err := ParseStatCSV(readTestdata(t, name))
			if err != nil {
				t.Fatal(err)
			}
			got, err := SummarizeStats(tab)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(captureReport(), got); d != "" {
				t.Errorf("report (-want +got):\n%s", d)
			}
			// The streaming parser of Report, whole and in 1-byte reads
			// through a 5-byte buffer (the admin capture has a quoted
			// field, which hands over to encoding/csv).
			for _, size := range []int{0, 5} {
				got, err := readReport(iotest.OneByteReader(bytes.NewReader(readTestdata(t, name))), size)
				if err != nil {
					t.Fatal(err)
				}
				if d := cmp.Diff(captureReport(), got); d != "" {
					t.Errorf("streaming report, buffer %d (-want +got):\n%s", size, d)
				}
			}
		})
	}
}

// TestReportLargeLoadBalancer reads a real haproxy serving 20 listeners of
// 60 servers without checks (a quarter disabled, a quarter at weight 0): the streaming
// report equals the table parser's on the same answer, member for member.
func TestReportLargeLoadBalancer(t *testing.T) {
	const listeners, servers = 20, 60
	dir := testutil.ShortDir(t, "hx")
	sock := filepath.Join(dir, "lb.sock")
	var b strings.Builder
	fmt.Fprintf(&b, "global\n    stats socket %s mode 0600 level user\n", sock)
	b.WriteString("defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n")
	for l := range listeners {
		fmt.Fprintf(&b, "frontend fe-%d\n    bind unix@%s/f%d.sock\n    default_backend be-%d:fe-%d\n", l, dir, l, l, l)
		fmt.Fprintf(&b, "backend be-%d:fe-%d\n", l, l)
		for m := range servers {
			opts := []string{"", " disabled", " weight 0", ""}[m%4]
			fmt.Fprintf(&b, "    server m-%d-%d 127.0.0.1:%d%s\n", l, m, 1+m, opts)
		}
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	c := NewStatsClient(sock)
	testutil.StartHAProxy(t, cfg, func(ctx context.Context) error { _, err := c.ShowInfo(ctx); return err })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	raw, err := c.Query(ctx, cmdShowStat)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := ParseStatCSV(raw)
	if err != nil {
		t.Fatal(err)
	}
	want, err := SummarizeStats(tab)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("streaming report differs from the table parser's (-table +streaming):\n%s", d)
	}
	members, maint := 0, 0
	for _, p := range got.Pools {
		members += len(p.Members)
		for _, st := range p.Members {
			if st == "MAINT" {
				maint++
			}
		}
	}
	if len(got.Listeners) != listeners || len(got.Pools) != listeners || members != listeners*servers || maint != listeners*servers/4 {
		t.Errorf("%d listeners, %d pools, %d members (%d MAINT); want %d, %d, %d (%d)",
			len(got.Listeners), len(got.Pools), members, maint, listeners, listeners, listeners*servers, listeners*servers/4)
	}
	t.Logf("answer of %d bytes: %d listeners, %d members", len(raw), len(got.Listeners), members)
}

func TestParseCaptureDetails(t *testing.T) {
	tab, err := ParseStatCSV(readTestdata(t, "show_stat_all_admin_2.6.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if tab.Columns[0] != "pxname" || tab.Columns[len(tab.Columns)-1] != "" {
		t.Errorf("columns: first %q, last %q; want pxname and an unnamed trailing column", tab.Columns[0], tab.Columns[len(tab.Columns)-1])
	}
	if len(tab.Columns) < 100 {
		t.Errorf("haproxy 2.6 has well over 100 columns, got %d", len(tab.Columns))
	}
	var cookie, sockRows string
	for i := range tab.Rows {
		if tab.Value(i, "svname") == fxM+"3" {
			cookie = tab.Value(i, "cookie")
		}
		if tab.Value(i, "type") == rowSocket {
			sockRows += tab.Value(i, "svname") + " "
		}
	}
	// The quoted field keeps its comma and quote; the UTF-8 survives (the
	// reference's ASCII decode raised on it).
	if cookie != `é,x"y` {
		t.Errorf("cookie of member 3 = %q", cookie)
	}
	if sockRows != "sock-1 " {
		t.Errorf("socket rows: %q; want sock-1 (present, and ignored by SummarizeStats)", sockRows)
	}
}

func TestParseShowInfoCapture(t *testing.T) {
	info, err := ParseShowInfo(readTestdata(t, "show_info_2.6.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if info["Name"] != "HAProxy" || !strings.HasPrefix(info["Version"], "2.6.") {
		t.Errorf("Name %q, Version %q", info["Name"], info["Version"])
	}
	if _, err := info.UptimeSec(); err != nil {
		t.Error(err)
	}
}

// header26 is a trimmed haproxy 2.6 header used by the synthetic cases.
const header26 = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,\n"

func TestSummarizeSynthetic(t *testing.T) {
	row := func(px, sv, status, weight, typ string, counters ...string) string {
		c := []string{"", "", "", "", ""} // scur stot bin bout ereq
		copy(c, counters)
		return fmt.Sprintf("%s,%s,,,%s,,,%s,%s,%s,,,%s,,,,,%s,%s,,,,,,,,,,,,,,%s,\n", px, sv, c[0], c[1], c[2], c[3], c[4], status, weight, typ)
	}
	pool := func(status string, members ...string) PoolStatus {
		p := PoolStatus{Status: status, Members: map[string]string{}}
		for i := 0; i+1 < len(members); i += 2 {
			p.Members[members[i]] = members[i+1]
		}
		return p
	}
	tests := []struct {
		name    string
		in      string
		want    *StatsReport
		wantErr bool
	}{
		{
			name: "transitional and administrative statuses pass through",
			in: header26 +
				row("l", "FRONTEND", "OPEN", "", "0", "3", "10", "100", "200", "1") +
				row("p:l", "a", "UP 1/3", "1", "2") +
				row("p:l", "b", "DOWN 1/2", "1", "2") +
				row("p:l", "c", "NOLB", "1", "2") +
				row("p:l", "d", "MAINT (via p:l/x)", "1", "2") +
				row("p:l", "e", "DRAIN", "0", "2") +
				row("p:l", "f", "UP", "0", "2") +
				row("p:l", "g", "UP 2/3", "0", "2") +
				row("p:l", "h", "no check", "0", "2") +
				row("p:l", "BACKEND", "DOWN", "0", "1"),
			want: &StatsReport{
				Listeners: map[string]ListenerStats{"l": {Status: "OPEN", Scur: 3, Stot: 10, Bin: 100, Bout: 200, Ereq: 1}},
				Pools: map[string]PoolStatus{"p:l": pool("DOWN",
					"a", "UP 1/3", "b", "DOWN 1/2", "c", "NOLB", "d", "MAINT (via p:l/x)",
					"e", "DRAIN", "f", "DRAIN", "g", "UP 2/3", "h", "no check")},
			},
		},
		{
			name: "older haproxy FULL frontend, no type column",
			in: "# pxname,svname,scur,stot,bin,bout,ereq,status,weight\n" +
				"l,FRONTEND,5,9,1,2,0,FULL,\n" +
				"p:l,m,0,0,0,0,,UP,0\n" +
				"p:l,BACKEND,0,0,0,0,,UP,0\n",
			want: &StatsReport{
				Listeners: map[string]ListenerStats{"l": {Status: "FULL", Scur: 5, Stot: 9, Bin: 1, Bout: 2}},
				Pools:     map[string]PoolStatus{"p:l": pool("UP", "m", "DRAIN")},
			},
		},
		{
			name: "columns reordered, extra and unknown columns, short rows",
			in: "# status,future_col,svname,pxname,weight,bout,bin,stot,scur,ereq,,\n" +
				"OPEN,x,FRONTEND,l,,7,6,5,4,3,,\n" +
				"UP,y,m,p:l\n" +
				"UP,y,BACKEND,p:l,1,,,,,,,,extra,fields\n",
			want: &StatsReport{
				Listeners: map[string]ListenerStats{"l": {Status: "OPEN", Scur: 4, Stot: 5, Bin: 6, Bout: 7, Ereq: 3}},
				Pools:     map[string]PoolStatus{"p:l": pool("UP", "m", "UP")},
			},
		},
		{
			name: "prometheus rows and socket rows are dropped",
			in: header26 +
				row("prometheus-exporter-internal-endpoint", "FRONTEND", "OPEN", "", "0", "1", "1", "1", "1", "0") +
				row("prometheus-exporter-internal", "s", "UP", "1", "2") +
				row("prometheus-exporter-internal", "BACKEND", "UP", "1", "1") +
				row("l", "FRONTEND", "OPEN", "", "0") +
				row("l", "sock-1", "OPEN", "", "3", "9", "9", "9", "9", "9") +
				row("p:l", "BACKEND", "UP", "0", "1"),
			want: &StatsReport{
				Listeners: map[string]ListenerStats{"l": {Status: "OPEN"}},
				Pools:     map[string]PoolStatus{"p:l": pool("UP")},
			},
		},
		{
			name: "a listen section: frontend and backend share pxname",
			in: header26 +
				row("x", "FRONTEND", "OPEN", "", "0", "1", "2", "3", "4", "0") +
				row("x", "s1", "DOWN", "1", "2") +
				row("x", "BACKEND", "DOWN", "0", "1"),
			want: &StatsReport{
				Listeners: map[string]ListenerStats{"x": {Status: "OPEN", Scur: 1, Stot: 2, Bin: 3, Bout: 4}},
				Pools:     map[string]PoolStatus{"x": pool("DOWN", "s1", "DOWN")},
			},
		},
		{
			name: "servers without a backend row are dropped",
			in:   header26 + row("p:l", "m", "UP", "1", "2"),
			want: &StatsReport{Listeners: map[string]ListenerStats{}, Pools: map[string]PoolStatus{}},
		},
		{
			name: "invalid UTF-8 and quoted names",
			in:   header26 + row("\"l\xff,1\"", "FRONTEND", "OPEN", "", "0") + row("\"p:l\xff,1\"", `"m ""q"""`, "UP", "1", "2") + row("\"p:l\xff,1\"", "BACKEND", "UP", "1", "1"),
			want: &StatsReport{
				Listeners: map[string]ListenerStats{"l\uFFFD,1": {Status: "OPEN"}},
				Pools:     map[string]PoolStatus{"p:l\uFFFD,1": pool("UP", `m "q"`, "UP")},
			},
		},
		{name: "non-numeric counter", in: header26 + row("l", "FRONTEND", "OPEN", "", "0", "x"), wantErr: true},
		{name: "negative counter", in: header26 + row("l", "FRONTEND", "OPEN", "", "0", "-1"), wantErr: true},
		{name: "no status column", in: "# pxname,svname,scur\nl,FRONTEND,1\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := ParseStatCSV([]byte(tc.in))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			got, err := SummarizeStats(tab)
			if tc.wantErr {
				if err == nil || !errors.Is(err, ErrStatsOutput) {
					t.Fatalf("got %+v, %v; want an ErrStatsOutput error", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("report (-want +got):\n%s", d)
			}
		})
	}
}

func TestParseStatCSVErrors(t *testing.T) {
	for _, in := range []string{
		"",
		"\n\n",
		"Unknown command, but maybe one of the following ones is a better match:\n  show stat ...\n",
		"Permission denied\n",
		"# qcur,qmax\n1,2\n", // no pxname/svname
	} {
		if tab, err := ParseStatCSV([]byte(in)); !errors.Is(err, ErrStatsOutput) {
			t.Errorf("ParseStatCSV(%q) = %+v, %v; want ErrStatsOutput", in, tab, err)
		}
	}
}

func TestParseShowInfo(t *testing.T) {
	info, err := ParseShowInfo([]byte("Name: HAProxy\nUptime: 0d 0h00m08s\nUptime_sec: 8\nEmpty:\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(RuntimeInfo{"Name": "HAProxy", "Uptime": "0d 0h00m08s", "Uptime_sec": "8", "Empty": ""}, info); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if up, err := info.UptimeSec(); up != 8 || err != nil {
		t.Errorf("UptimeSec = %d, %v", up, err)
	}
	for _, in := range []string{"", "Permission denied\n", ": x\n"} {
		if _, err := ParseShowInfo([]byte(in)); !errors.Is(err, ErrStatsOutput) {
			t.Errorf("ParseShowInfo(%q) err = %v; want ErrStatsOutput", in, err)
		}
	}
	for _, v := range []RuntimeInfo{{}, {"Uptime_sec": "x"}, {"Uptime_sec": "-1"}} {
		if _, err := v.UptimeSec(); !errors.Is(err, ErrStatsOutput) {
			t.Errorf("UptimeSec(%v) err = %v", v, err)
		}
	}
}

// fakeSocket serves a unix socket in a short temp dir; handle gets each
// accepted connection after the command line was read. It exists for the failure modes a real haproxy does
// not produce on demand (an answer that never comes, garbage, floods).
func fakeSocket(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	path := filepath.Join(testutil.ShortDir(t, "hx"), "f.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
					handle(c)
				}
			})
		}
	})
	return path
}

func TestQueryRefusesSeparators(t *testing.T) {
	c := NewStatsClient(filepath.Join(testutil.ShortDir(t, "hx"), "none.sock"))
	for _, cmd := range []string{"", "show info;disable server a/b", "show info\nshutdown frontend x", "show info\r", "show\x00info"} {
		if _, err := c.Query(context.Background(), cmd); !errors.Is(err, ErrStatsCommand) {
			t.Errorf("Query(%q) err = %v; want ErrStatsCommand", cmd, err)
		}
	}
}

func TestQueryFailures(t *testing.T) {
	t.Run("missing socket", func(t *testing.T) {
		c := NewStatsClient(filepath.Join(testutil.ShortDir(t, "hx"), "none.sock"))
		_, err := c.Report(context.Background())
		if err == nil || !strings.Contains(err.Error(), "none.sock") {
			t.Fatalf("err = %v; want a dial error naming the socket", err)
		}
	})
	t.Run("no answer: deadline", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		path := fakeSocket(t, func(c net.Conn) { <-release })
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		t0 := time.Now()
		_, err := NewStatsClient(path).Query(ctx, "show info")
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > 3*time.Second {
			t.Fatalf("err = %v after %v; want a deadline error within the deadline", err, time.Since(t0))
		}
	})
	t.Run("no answer: client timeout without ctx deadline", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		path := fakeSocket(t, func(c net.Conn) { <-release })
		c := &StatsClient{Path: path, Timeout: 150 * time.Millisecond}
		if _, err := c.Query(context.Background(), "show info"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v; want a deadline error", err)
		}
	})
	t.Run("no answer: cancel", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		accepted := make(chan struct{}, 1)
		path := fakeSocket(t, func(c net.Conn) { accepted <- struct{}{}; <-release })
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-accepted; cancel() }()
		if _, err := NewStatsClient(path).Query(ctx, "show info"); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v; want context.Canceled", err)
		}
	})
	t.Run("part of the answer, then cancel: an error, not a short answer", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		sent := make(chan struct{}, 1)
		path := fakeSocket(t, func(c net.Conn) {
			_, _ = io.WriteString(c, "# pxname,svname,status\nfe,FRONTEND,OPEN\n")
			sent <- struct{}{}
			<-release
		})
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-sent; time.Sleep(50 * time.Millisecond); cancel() }()
		rep, err := NewStatsClient(path).Report(ctx)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Report = %+v, %v; want context.Canceled", rep, err)
		}
	})
	t.Run("oversized answer", func(t *testing.T) {
		path := fakeSocket(t, func(c net.Conn) {
			_, _ = c.Write(bytes.Repeat([]byte("x"), 4096))
		})
		c := &StatsClient{Path: path, MaxResponse: 1024}
		if _, err := c.Query(context.Background(), "show info"); !errors.Is(err, ErrStatsOutput) {
			t.Fatalf("err = %v; want ErrStatsOutput", err)
		}
	})
	t.Run("error text instead of the table", func(t *testing.T) {
		path := fakeSocket(t, func(c net.Conn) { io.WriteString(c, "Permission denied\n\n") })
		c := NewStatsClient(path)
		if _, err := c.Report(context.Background()); !errors.Is(err, ErrStatsOutput) {
			t.Errorf("Report err = %v; want ErrStatsOutput", err)
		}
		if _, err := c.ShowInfo(context.Background()); !errors.Is(err, ErrStatsOutput) {
			t.Errorf("ShowInfo err = %v; want ErrStatsOutput", err)
		}
		if _, err := c.ShowServersState(context.Background()); !errors.Is(err, ErrStatsOutput) {
			t.Errorf("ShowServersState err = %v; want ErrStatsOutput", err)
		}
	})
	t.Run("one command per connection, newline terminated", func(t *testing.T) {
		got := make(chan string, 1)
		path := filepath.Join(testutil.ShortDir(t, "hx"), "f.sock")
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			b, _ := bufio.NewReader(c).ReadString('\n')
			got <- b
			io.WriteString(c, "1\n# be_id be_name\n\n")
		}()
		out, err := NewStatsClient(path).ShowServersState(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if cmd := <-got; cmd != "show servers state\n" {
			t.Errorf("sent %q", cmd)
		}
		if string(out) != "1\n# be_id be_name\n" {
			t.Errorf("ShowServersState = %q", out)
		}
	})
}

func TestServersStateCapture(t *testing.T) {
	raw := readTestdata(t, "show_servers_state_2.6.txt")
	path := fakeSocket(t, func(c net.Conn) { _, _ = c.Write(raw) })
	out, err := NewStatsClient(path).ShowServersState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := string(bytes.TrimRight(raw, "\n")) + "\n"
	if string(out) != want {
		t.Errorf("got %q\nwant %q", out, want)
	}
	if !strings.Contains(string(out), fxP1+" 2 "+fxM+"2 ") {
		t.Errorf("member 2 missing from:\n%s", out)
	}
}
