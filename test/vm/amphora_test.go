package vm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// TestAmphoraVM boots one amphora from the image and drives it like Nova
// and the Octavia controller: scenarios 1-6 of issue 11, in order (each
// needs the state the previous one left).
func TestAmphoraVM(t *testing.T) {
	v := newVMTest(t)
	amp := v.boot(0, "SINGLE")
	lb := NewHTTPLoadBalancer()
	udp := udpListener{ID: testutil.NewUUID(), PoolID: testutil.NewUUID(), MemberIDs: []string{testutil.NewUUID(), testutil.NewUUID()}}
	// Octavia's templaters take seconds to start: render meanwhile.
	var lbConfig string
	var udpConfig []byte
	renderErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var err error
		lbConfig, err = lb.Render(ctx, amp)
		renderErr <- err
	}()
	udpConfig = testutil.RenderLVS(t, udp.spec(lb.LBID))[0]

	ok := v.run("1 boot", func(t *testing.T) {
		ctx, cancel := v.ctx(12 * time.Minute)
		defer cancel()
		answered, err := amp.AwaitAnswer(ctx)
		v.must(err)
		v.figure("boot -> first mTLS answer", answered.Sub(amp.Guest.Started))
		first := v.hb.await(amp.ID, amp.Guest.Started, 2*time.Minute, "any content", func(*heartbeat) bool { return true })
		v.figure("boot -> first heartbeat", first.At.Sub(amp.Guest.Started))
		if first.Ver != 3 || len(first.Listeners) != 0 {
			t.Errorf("first heartbeat of a new amphora: %s", first.Raw)
		}
		res := v.octavia(amp, 0, Call("get_info"), Call("driver_versions"))
		var info struct {
			Hostname       string `json:"hostname"`
			APIVersion     string `json:"api_version"`
			HAProxyVersion string `json:"haproxy_version"`
		}
		v.must(json.Unmarshal(res[0], &info))
		if info.Hostname != amp.Request.Name || info.APIVersion != "1.0" || !strings.HasPrefix(info.HAProxyVersion, "2.") {
			t.Errorf("get_info: %s (want hostname %s: cloud-init set it from the config drive)", res[0], amp.Request.Name)
		}
		t.Logf("controller's version discovery: %s", res[1])
	})
	if !ok {
		t.FailNow()
	}

	ok = v.run("2 HTTP load balancer", func(t *testing.T) {
		ctx, cancel := v.ctx(3 * time.Minute)
		defer cancel()
		_, _, err := amp.PlugPorts(ctx)
		v.must(err)
		v.must(<-renderErr)
		v.must(lb.Deploy(ctx, amp, lbConfig))
		tDeployed := time.Now()
		n := v.reachBoth("after start_listener", lb.URL())
		t.Logf("client -> VIP reached both members after %d requests", n)
		v.hb.await(amp.ID, tDeployed, time.Minute, "listener OPEN, both members UP", func(m *heartbeat) bool {
			p := m.Pools[lb.PoolID+":"+lb.ListenerID]
			return m.Listeners[lb.ListenerID].Status == "OPEN" && p.Status == "UP" &&
				p.Members[lb.MemberIDs[0]] == "UP" && p.Members[lb.MemberIDs[1]] == "UP"
		})

		// Tenants scrape the PROMETHEUS listener through the VIP: the
		// agent's Prometheus proxy serves Octavia's metric names.
		v.scrape(lb, "after start_listener")

		// Hitless reload under a bounded load: back-to-back requests, each
		// on a new connection, during reload_listener and 3 s after.
		p := v.startProbe(lb.URL(), 0, 5*time.Second, 5000, 2*time.Minute)
		time.Sleep(2 * time.Second)
		t0 := time.Now()
		v.octavia(amp, http.StatusAccepted, Call("reload_listener", lb.LBID))
		time.Sleep(3 * time.Second)
		p.Stop()
		sent, failed := p.count(t0.Add(-2*time.Second), time.Now()), p.failed(t0.Add(-2*time.Second), time.Now())
		v.figure("hitless reload: requests, failed", fmt.Sprintf("%d, %d", sent, len(failed)))
		if len(failed) > 0 || sent < 10 {
			t.Errorf("reload_listener under load: %d of %d requests failed (first: %v)", len(failed), sent, firstErr(failed))
		}

		// A member whose health check fails is DOWN in the heartbeat,
		// and back UP when it recovers.
		v.lab.Member(1).SetHealthy(false)
		tDown := time.Now()
		m := v.hb.await(amp.ID, tDown, time.Minute, "member2 DOWN", func(m *heartbeat) bool {
			p := m.Pools[lb.PoolID+":"+lb.ListenerID]
			return p.Members[lb.MemberIDs[1]] == "DOWN" && p.Members[lb.MemberIDs[0]] == "UP"
		})
		v.figure("member down -> seen in heartbeat", m.At.Sub(tDown))
		v.lab.Member(1).SetHealthy(true)
		v.hb.await(amp.ID, time.Now(), time.Minute, "member2 UP again", func(m *heartbeat) bool {
			return m.Pools[lb.PoolID+":"+lb.ListenerID].Members[lb.MemberIDs[1]] == "UP"
		})
	})
	if !ok {
		t.FailNow()
	}

	ok = v.run("3 UDP listener through IPVS", func(t *testing.T) {
		v.octavia(amp, 0, Call("upload_udp_config", udp.ID, string(udpConfig)))
		v.octavia(amp, http.StatusAccepted, Call("start_listener", udp.ID))
		tStart := time.Now()
		n := v.udpReachBoth("after start_listener", udpListenerPort)
		t.Logf("client -> VIP:%d (UDP) reached both members after %d datagrams", udpListenerPort, n)
		m := v.hb.await(amp.ID, tStart, time.Minute, "UDP listener with IPVS counters, both members UP", func(m *heartbeat) bool {
			l, ok := m.Listeners[udp.ID]
			p := m.Pools[udp.PoolID]
			return ok && l.Status == "OPEN" && l.Stats.RX > 0 && l.Stats.TotConns > 0 &&
				p.Status == "UP" && p.Members[udp.MemberIDs[0]] == "UP" && p.Members[udp.MemberIDs[1]] == "UP"
		})
		t.Logf("heartbeat with the UDP listener: %s", m.Raw)
		// The kernel table is the guest's own (the host has no IPVS).
		out := v.ssh(amp, "sudo ip netns exec amphora-haproxy ipvsadm -Ln")
		if !strings.Contains(out, "UDP  "+VIP+":"+strconv.Itoa(udpListenerPort)) || strings.Count(out, ":"+strconv.Itoa(UDPPort)) != 2 {
			t.Errorf("ipvsadm -Ln in the guest:\n%s", out)
		}
		// A member that stops answering (ICMP port unreachable) is taken
		// out of IPVS by keepalived's check and reported DOWN.
		v.lab.Member(1).StopUDP()
		tDown := time.Now()
		m = v.hb.await(amp.ID, tDown, 90*time.Second, "UDP member2 DOWN", func(m *heartbeat) bool {
			return m.Pools[udp.PoolID].Members[udp.MemberIDs[1]] == "DOWN" && m.Pools[udp.PoolID].Members[udp.MemberIDs[0]] == "UP"
		})
		v.figure("UDP member down -> seen in heartbeat", m.At.Sub(tDown))
		for i := 0; i < 6; i++ {
			if got, err := v.udpAsk(udpListenerPort, 2*time.Second); err != nil || got != "member1" {
				t.Errorf("UDP with member2 down: %q, %v", got, err)
			}
		}
		v.must(v.lab.Member(1).StartUDP())
		v.hb.await(amp.ID, time.Now(), 90*time.Second, "UDP member2 UP again", func(m *heartbeat) bool {
			return m.Pools[udp.PoolID].Members[udp.MemberIDs[1]] == "UP"
		})
	})
	if !ok {
		t.FailNow()
	}

	v.run("4 log offloading", func(t *testing.T) {
		// Flow logs: haproxy logs to the image's rsyslog socket with
		// facility local<user_log_facility> (0), the controller's
		// 10-rsyslog.conf forwards local0.=info to the tenant target.
		v.reachBoth("traffic for flow logs", lb.URL())
		flow := v.awaitSyslog(v.lab.TenantLogs, 30*time.Second, "a flow log of the listener", func(m syslogMsg) bool {
			return m.Facility == 16 && m.Severity == 6 && strings.Contains(m.Text, "haproxy") &&
				strings.Contains(m.Text, lb.ListenerID)
		})
		t.Logf("tenant log target got: %s", flow.Text)
		// Administrative logs: local<administrative_log_facility> (1)
		// goes to the admin target. haproxy's own (server state changes
		// of scenario 2) and keepalived's (LVS checks of scenario 3).
		adm := v.awaitSyslog(v.lab.AdminLogs, 30*time.Second, "haproxy's member DOWN notice", func(m syslogMsg) bool {
			return m.Facility == 17 && strings.Contains(m.Text, "haproxy") && strings.Contains(m.Text, lb.MemberIDs[1]) &&
				strings.Contains(m.Text, "DOWN")
		})
		t.Logf("admin log target got: %s", adm.Text)
		v.awaitSyslog(v.lab.AdminLogs, 30*time.Second, "keepalived's check messages", func(m syslogMsg) bool {
			return m.Facility == 17 && strings.Contains(m.Text, "Keepalived")
		})
		for _, m := range v.syslog(v.lab.TenantLogs) {
			if m.Facility != 16 {
				t.Errorf("tenant target got facility %d (only local0 goes there): %s", m.Facility, m.Text)
				break
			}
		}
		// The agent's own administrative records (use_syslog = True,
		// syslog_log_facility = LOG_LOCAL1 in the controller's config).
		agent := v.awaitSyslog(v.lab.AdminLogs, 30*time.Second, "a record of the agent", func(m syslogMsg) bool {
			return m.Facility == 17 && strings.Contains(m.Text, " amphora-agent[")
		})
		t.Logf("admin log target got the agent's: %s", agent.Text)
	})

	ok = v.run("5 operator access", func(t *testing.T) {
		ctx, cancel := v.ctx(3 * time.Minute)
		defer cancel()
		v.must(amp.AwaitSSH(ctx))
		if out := v.ssh(amp, "id -un"); strings.TrimSpace(out) != SSHUser {
			t.Errorf("logged in as %q", out)
		}
		status := v.ssh(amp, "sudo amphora-agent --config-file /etc/octavia/amphora-agent.conf status")
		for _, want := range []string{amp.ID, lb.LBID, "haproxy running", lb.ListenerID, udp.ID, VIP, "eth1", "eth2",
			lb.MemberIDs[0] + " UP", lb.MemberIDs[1] + " UP"} {
			if !strings.Contains(status, want) {
				t.Errorf("amphora-agent status lacks %q:\n%s", want, status)
			}
		}
		t.Logf("amphora-agent status:\n%s", status)
		v.figure("agent RSS in the guest", v.agentRSS(amp))
		// Nova's config drive, as cloud-init applied it: every file
		// the controller sent, byte for byte.
		var paths []string
		for p := range amp.Request.ConfigDriveFiles {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		out := v.ssh(amp, "sudo sha256sum "+strings.Join(paths, " "))
		for _, p := range paths {
			sum := sha256.Sum256([]byte(amp.Request.ConfigDriveFiles[p]))
			if !strings.Contains(out, hex.EncodeToString(sum[:])+"  "+p) {
				t.Errorf("%s in the guest differs from what the controller sent:\n%s", p, out)
			}
		}
	})
	if !ok {
		t.FailNow()
	}

	v.run("6 reboot", func(t *testing.T) {
		before := v.dataPlaneState(amp)
		for _, how := range []string{"guest reboot", "system_reset"} {
			p := v.startProbe(lb.URL(), 250*time.Millisecond, time.Second, 4000, 10*time.Minute)
			events := len(amp.Guest.QMP.Events())
			time.Sleep(time.Second)
			t0 := time.Now()
			if how == "guest reboot" {
				v.ssh(amp, "sudo systemd-run --no-block --on-active=1 /bin/systemctl reboot")
			} else {
				ctx, cancel := v.ctx(10 * time.Second)
				v.must(amp.Guest.QMP.SystemReset(ctx))
				cancel()
			}
			ctx, cancel := v.ctx(2 * time.Minute)
			reset, _, err := amp.Guest.QMP.WaitEvent(ctx, "RESET", events)
			cancel()
			v.must(err)
			outage := v.awaitRecovery(p, t0, reset.At, 8*time.Minute, 3*time.Second, how)
			p.Stop()
			v.figure(how+" -> HTTP traffic restored", outage)
			// Heartbeats sent after the reset, by the agent of the new boot.
			hb := v.hb.await(amp.ID, reset.At, 3*time.Minute, "both listeners and all members UP again", func(m *heartbeat) bool {
				hp, up := m.Pools[lb.PoolID+":"+lb.ListenerID], m.Pools[udp.PoolID]
				return m.Listeners[lb.ListenerID].Status == "OPEN" && m.Listeners[udp.ID].Status == "OPEN" &&
					hp.Members[lb.MemberIDs[0]] == "UP" && hp.Members[lb.MemberIDs[1]] == "UP" &&
					up.Members[udp.MemberIDs[0]] == "UP" && up.Members[udp.MemberIDs[1]] == "UP"
			})
			v.figure(how+" -> heartbeat with all UP", hb.At.Sub(t0))
			v.scrape(lb, "after "+how)
			n := v.udpReachBoth("after "+how, udpListenerPort)
			t.Logf("%s: UDP reached both members after %d datagrams", how, n)
			ctx, cancel = v.ctx(3 * time.Minute)
			v.must(amp.AwaitSSH(ctx))
			cancel()
			if after := v.dataPlaneState(amp); after != before {
				t.Errorf("%s: the data-plane namespace differs:\nbefore:\n%s\nafter:\n%s", how, before, after)
			}
		}
		v.figure("agent RSS in the guest after reboot", v.agentRSS(amp))
	})

	// What the agent logged at warning level or above in this boot: shown
	// for the reader (the scenarios above assert the behaviour).
	v.run("agent log", func(t *testing.T) {
		out := v.ssh(amp, "sudo journalctl -b --no-pager -o cat -u amphora-agent -u amphora-netns | grep -E 'level=(WARN|ERROR)' | tail -n 30; true")
		t.Logf("agent warnings and errors since the last boot:\n%s", out)
	})
}

// agentRSS is the resident memory of the agent's main process (the
// service's MainPID: keepalived's UDP checks run the same binary).
func (v *vmTest) agentRSS(a *Amphora) string {
	v.t.Helper()
	out := strings.TrimSpace(v.ssh(a, "grep VmRSS /proc/$(systemctl show -p MainPID --value amphora-agent.service)/status"))
	f := strings.Fields(out)
	if len(f) != 3 || f[0] != "VmRSS:" || f[2] != "kB" {
		v.t.Errorf("agent RSS: %q", out)
		return "?"
	}
	kb, err := strconv.Atoi(f[1])
	if err != nil {
		v.t.Errorf("agent RSS: %q", out)
		return "?"
	}
	return fmt.Sprintf("%.1f MiB", float64(kb)/1024)
}

// scrape gets the PROMETHEUS listener's metrics from the client (bounded)
// until they name the HTTP listener and both members, and checks that the
// internal exporter stays hidden.
func (v *vmTest) scrape(lb HTTPLoadBalancer, what string) {
	v.t.Helper()
	c := v.lab.Client.HTTPClient(nil, 10*time.Second)
	ctx, cancel := v.ctx(time.Minute)
	defer cancel()
	var last string
	for ctx.Err() == nil {
		code, body, err := httpGetAll(c, lb.MetricsURL())
		last = fmt.Sprintf("%d %v %.300q", code, err, body)
		if err == nil && code == http.StatusOK && strings.Contains(body, `listener="`+lb.ListenerID+`"`) &&
			strings.Contains(body, `member="`+lb.MemberIDs[0]+`"`) && strings.Contains(body, `member="`+lb.MemberIDs[1]+`"`) {
			if strings.Contains(body, "prometheus-exporter") || strings.Contains(body, "prometheus-internal") {
				v.t.Errorf("%s: the internal exporter is visible to the tenant", what)
			}
			if !strings.Contains(body, "octavia_listener_") || !strings.Contains(body, `listener="`+lb.PromListenerID+`"`) {
				v.t.Errorf("%s: no octavia_listener_* metrics of both listeners", what)
			}
			return
		}
		time.Sleep(time.Second)
	}
	v.t.Fatalf("%s: GET %s: %s", what, lb.MetricsURL(), last)
}

// udpListenerPort is the UDP listener's port on the VIP.
const udpListenerPort = 53

// udpListener is a UDP listener with both lab members in its pool and
// a UDP-CONNECT health monitor.
type udpListener struct {
	ID, PoolID string
	MemberIDs  []string
}

// spec is render_lvs.py's input. The monitor's timeout is 3 s: keepalived
// kills a MISC_CHECK after misc_timeout (= the monitor's timeout), and
// under TCG starting the check program alone takes 0.3-1.2 s.
func (u udpListener) spec(lbID string) map[string]any {
	members := make([]map[string]any, len(u.MemberIDs))
	for i, id := range u.MemberIDs {
		members[i] = map[string]any{"id": id, "address": MemberIPs[i], "port": UDPPort}
	}
	return map[string]any{
		"lb_id": lbID, "base_path": "/var/lib/octavia", "vips": []string{VIP},
		"listener": map[string]any{
			"id": u.ID, "protocol": "UDP", "port": udpListenerPort, "connection_limit": -1,
			"pool": map[string]any{
				"id": u.PoolID, "lb_algorithm": "ROUND_ROBIN", "members": members,
				"monitor": map[string]any{"id": testutil.NewUUID(), "type": "UDP-CONNECT", "delay": 3, "timeout": 3, "fall": 2, "rise": 1},
			},
		},
	}
}

// dataPlaneState is what a reboot must restore in the data-plane
// namespace: links, addresses, routes of every table, rules (sorted).
func (v *vmTest) dataPlaneState(a *Amphora) string {
	v.t.Helper()
	out := v.ssh(a, "sudo sh -c 'ip -n amphora-haproxy -br link; ip -n amphora-haproxy -br addr; "+
		"ip -n amphora-haproxy route show table all; ip -n amphora-haproxy -6 route show table all; ip -n amphora-haproxy rule; ip -n amphora-haproxy -6 rule'")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func firstErr(s []sample) error {
	if len(s) == 0 {
		return nil
	}
	return s[0].err
}

// syslogMsg is one syslog datagram.
type syslogMsg struct {
	At                 time.Time
	Facility, Severity int
	Text               string
}

// parseSyslog reads the <PRI> of a datagram (RFC 3164 or 5424).
func parseSyslog(d Datagram) (syslogMsg, bool) {
	b := d.Data
	if len(b) < 3 || b[0] != '<' {
		return syslogMsg{}, false
	}
	end := bytes.IndexByte(b, '>')
	if end < 2 || end > 4 {
		return syslogMsg{}, false
	}
	pri, err := strconv.Atoi(string(b[1:end]))
	if err != nil || pri > 191 {
		return syslogMsg{}, false
	}
	return syslogMsg{At: d.At, Facility: pri / 8, Severity: pri % 8, Text: strings.TrimSpace(string(b[end+1:]))}, true
}

func (v *vmTest) syslog(r *Receiver) []syslogMsg {
	dgs, _ := r.Since(0)
	var out []syslogMsg
	for _, d := range dgs {
		if m, ok := parseSyslog(d); ok {
			out = append(out, m)
		}
	}
	return out
}

// awaitSyslog waits (bounded) for a message at r that satisfies cond.
func (v *vmTest) awaitSyslog(r *Receiver, limit time.Duration, what string, cond func(syslogMsg) bool) syslogMsg {
	v.t.Helper()
	ctx, cancel := v.ctx(limit)
	defer cancel()
	for {
		n := r.Len()
		for _, m := range v.syslog(r) {
			if cond(m) {
				return m
			}
		}
		if err := r.Wait(ctx, n); err != nil {
			var sample []string
			for i, m := range v.syslog(r) {
				if i >= 5 {
					break
				}
				sample = append(sample, fmt.Sprintf("<%d.%d> %s", m.Facility, m.Severity, m.Text))
			}
			v.t.Fatalf("%s: no %s within %v (%d messages; first: %s)", r.Addr, what, limit, r.Len(), strings.Join(sample, " | "))
		}
	}
}
