package main

// Log offloading end to end, with Debian's rsyslog running the
// controller's 10-rsyslog.conf (rendered by Octavia's logging templater)
// and forwarding over UDP to two log servers in their own namespaces:
//
//	lg-rs-<rand>   rsyslogd (own configuration, pid file and sockets under
//	               the test directory: the host's logging is never touched)
//	               198.18.70.1/24 -> lg-adm-<rand> 198.18.70.2 (admin log server)
//	               198.18.71.1/24 -> lg-ten-<rand> 198.18.71.2 (tenant log server)
//	lg-dp-<rand>   the agent's network_namespace: haproxy, a pool member
//
// The agent (use_syslog as the controller renders it) logs to rsyslog's
// socket through [amphora_agent] syslog_socket, haproxy through the path
// of its rendered "log /run/rsyslog/octavia/log" lines, rewritten to the
// test's socket (the only change to the controller's configuration).

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

const (
	lgAdmin    = "198.18.70.2"
	lgTenant   = "198.18.71.2"
	lgPort     = 10514
	lgVIP      = "127.0.0.30"
	lgVIPPort  = 8080
	lgOutage   = 10 * time.Second
	lgAdminFac = 1
	lgUserFac  = 0
)

func TestLogOffloading(t *testing.T) {
	t.Parallel()
	testutil.RequireNetAdmin(t)
	testutil.RequireBinary(t, "haproxy")
	testutil.RequireBinary(t, "rsyslogd")
	testutil.RequireRenderer(t)
	dir := testutil.ShortDir(t, "lg")
	// haproxy (user nobody) reaches its log socket below it
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}

	rs := testutil.NewNetNS(t, "lg-rs")
	adm := testutil.NewNetNS(t, "lg-adm")
	ten := testutil.NewNetNS(t, "lg-ten")
	testutil.Veth(t, rs, "lga0", adm, "lga1")
	testutil.Veth(t, rs, "lgt0", ten, "lgt1")
	for _, a := range []struct {
		ns         *testutil.NetNS
		ifname, ip string
	}{{rs, "lga0", "198.18.70.1/24"}, {adm, "lga1", lgAdmin + "/24"}, {rs, "lgt0", "198.18.71.1/24"}, {ten, "lgt1", lgTenant + "/24"}} {
		if err := a.ns.AddAddr(a.ifname, a.ip); err != nil {
			t.Fatal(err)
		}
	}
	adminSrv := testutil.StartLogServer(t, adm, net.JoinHostPort(lgAdmin, strconv.Itoa(lgPort)))
	tenantSrv := testutil.StartLogServer(t, ten, net.JoinHostPort(lgTenant, strconv.Itoa(lgPort)))
	conf := testutil.RenderRsyslog(t, testutil.RsyslogSpec{
		AdminTargets: []string{adminSrv.Addr}, TenantTargets: []string{tenantSrv.Addr},
		Protocol: "UDP", AdminFacility: lgAdminFac, UserFacility: lgUserFac,
	})
	if !strings.Contains(conf, "local1.* call admin_forwarding") || !strings.Contains(conf, "local0.=info call tenant_forwarding") {
		t.Fatalf("unexpected 10-rsyslog.conf:\n%s", conf)
	}
	devLog := filepath.Join(dir, "devlog")         // the agent's /dev/log
	octaviaLog := filepath.Join(dir, "octavialog") // haproxy's /run/rsyslog/octavia/log
	rsyslog := testutil.StartRsyslog(t, filepath.Join(dir, "rsyslog"), testutil.RsyslogOptions{
		Sockets: []string{devLog, octaviaLog}, Include: conf, Prefix: []string{"ip", "netns", "exec", rs.Name},
	})

	// heartbeats, to see them go on while rsyslog is away
	var beats atomic.Int64
	hb := testutil.ListenUDP(t, "udp4", "127.0.0.1:0", func([]byte) { beats.Add(1) })

	dp := testutil.NewNetNS(t, "lg-dp")
	member := testutil.StartMember(t, dp, "127.0.0.1:0", "up")
	_, mp, _ := net.SplitHostPort(member.Addr)
	memberPort, _ := strconv.Atoi(mp)
	lbID, listenerID, poolID := testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID()
	spec := testutil.RenderSpec{
		AmphoraID: testutil.DefaultAmphoraID, LBID: lbID,
		BasePath: filepath.Join(dir, "lib"), CertDir: filepath.Join(dir, "lib", "certs"), VIP: lgVIP,
		Listeners: []testutil.RenderListener{{ID: listenerID, Protocol: "HTTP", Port: lgVIPPort, PoolID: poolID,
			Members: []testutil.RenderMember{{ID: testutil.NewUUID(), Address: "127.0.0.1", Port: memberPort}}}},
	}
	cfgText := testutil.Render(t, spec)[0]
	if !strings.Contains(cfgText, "log /run/rsyslog/octavia/log local0\n") {
		t.Fatalf("rendered configuration without haproxy's log socket:\n%s", cfgText)
	}
	cfgText = strings.ReplaceAll(cfgText, "/run/rsyslog/octavia/log", octaviaLog)

	a := testutil.StartAgent(t, testutil.Options{
		Dir: dir,
		Options: map[string]string{
			// as the controller renders them
			"DEFAULT/use_syslog":                          "True",
			"DEFAULT/syslog_log_facility":                 "LOG_LOCAL" + strconv.Itoa(lgAdminFac),
			"haproxy_amphora/administrative_log_facility": strconv.Itoa(lgAdminFac),
			"haproxy_amphora/user_log_facility":           strconv.Itoa(lgUserFac),
			// the test's rsyslog instead of /dev/log
			"amphora_agent/syslog_socket":             devLog,
			"amphora_agent/network_namespace":         dp.Name,
			"amphora_agent/service_manager":           "builtin",
			"amphora_agent/haproxy_user_group_config": filepath.Join(dir, "haproxy-default-user-group.conf"),
			"health_manager/controller_ip_port_list":  hb.LocalAddr().String(),
			"health_manager/heartbeat_interval":       "1",
		},
	})
	fromAgent := func(m testutil.SyslogMessage) bool { return strings.Contains(m.Raw, " amphora-agent[") }
	waitLog := func(t *testing.T, s *testutil.LogServer, d time.Duration, what string, pred func(testutil.SyslogMessage) bool) testutil.SyslogMessage {
		t.Helper()
		var found testutil.SyslogMessage
		testutil.WaitFor(t, d, func() (bool, string) {
			m, ok := s.Find(pred)
			found = m
			return ok, fmt.Sprintf("%s: not among %d messages; rsyslog's local copy:\n%s", what, len(s.Messages()), tail(rsyslog.LocalLog(), 3000))
		})
		return found
	}

	t.Run("admin logs at the admin target", func(t *testing.T) {
		m := waitLog(t, adminSrv, 20*time.Second, "the agent's start-up record", func(m testutil.SyslogMessage) bool {
			return fromAgent(m) && strings.Contains(m.Raw, `msg="amphora agent listening"`)
		})
		if m.Facility != 16+lgAdminFac || m.Severity != 6 {
			t.Errorf("facility %d severity %d, want local%d (%d) info: %q", m.Facility, m.Severity, lgAdminFac, 16+lgAdminFac, m.Raw)
		}
		if !strings.Contains(m.Raw, "amphora_id="+a.AmphoraID) {
			t.Errorf("structured content lost: %q", m.Raw)
		}
	})

	t.Run("haproxy flow logs at the tenant target", func(t *testing.T) {
		if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+a.AmphoraID+"/"+lbID+"/haproxy", []byte(cfgText)); code != http.StatusAccepted {
			t.Fatalf("upload: %d %s", code, body)
		}
		if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+lbID+"/start", nil); code != http.StatusAccepted {
			t.Fatalf("start: %d %s\n%s", code, body, a.Log())
		}
		c := dp.HTTPClient(nil, 5*time.Second)
		url := "http://" + net.JoinHostPort(lgVIP, strconv.Itoa(lgVIPPort)) + "/flow-log-probe"
		testutil.WaitFor(t, 20*time.Second, func() (bool, string) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			code, body, err := testutil.Get(ctx, c, url)
			return err == nil && code == 200 && body == "up", fmt.Sprintf("%d %q %v", code, body, err)
		})
		m := waitLog(t, tenantSrv, 20*time.Second, "haproxy's flow log line", func(m testutil.SyslogMessage) bool {
			return strings.Contains(m.Raw, "/flow-log-probe")
		})
		if m.Facility != 16+lgUserFac || !strings.Contains(m.Raw, lbID) || !strings.Contains(m.Raw, listenerID) || !strings.Contains(m.Raw, "haproxy[") {
			t.Errorf("flow log line (facility %d): %q", m.Facility, m.Raw)
		}
	})

	t.Run("rsyslog away for 10 s", func(t *testing.T) {
		rsyslog.Stop()
		start := time.Now()
		beatsBefore := beats.Load()
		// a controller polling the agent all the while: every request is
		// a log record; at least 10 s, and more records than the queue
		// (1024) holds
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: a.TLSConfig(a.PKI.ClientPEM)}}
		defer client.CloseIdleConnections()
		requests := 0
		for (time.Since(start) < lgOutage || requests < 1500) && requests < 5000 && time.Since(start) < 4*lgOutage {
			resp, err := client.Get(a.URL("/1.0/info"))
			if err != nil {
				t.Fatalf("request %d while rsyslog is away: %v", requests, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("request %d while rsyslog is away: %d", requests, resp.StatusCode)
			}
			requests++
		}
		outage := time.Since(start)
		during := beats.Load() - beatsBefore
		if during < int64(outage/time.Second)-3 {
			t.Errorf("%d heartbeats in %v without rsyslog, want about one a second", during, outage)
		}
		status := pxStatus(t, a)
		if !strings.Contains(status, "FAILING since") || !strings.Contains(status, "dropped") {
			t.Errorf("status during the outage:\n%s", status)
		}
		rsyslog.Start()
		m := waitLog(t, adminSrv, 20*time.Second, "the delivery-resumed warning", func(m testutil.SyslogMessage) bool {
			return fromAgent(m) && strings.Contains(m.Raw, `msg="syslog delivery resumed"`)
		})
		dropped := -1
		if i := strings.Index(m.Raw, " dropped="); i >= 0 {
			dropped, _ = strconv.Atoi(strings.Fields(m.Raw[i+len(" dropped="):])[0])
		}
		if dropped <= 0 || m.Facility != 16+lgAdminFac || m.Severity != 4 {
			t.Errorf("resumed warning (facility %d, severity %d, dropped %d): %q", m.Facility, m.Severity, dropped, m.Raw)
		}
		t.Logf("outage of %v: %d requests served, %d heartbeats sent, %d records dropped and reported", outage.Round(time.Millisecond), requests, during, dropped)
		testutil.WaitFor(t, 20*time.Second, func() (bool, string) {
			out := pxStatus(t, a)
			return strings.Contains(out, "amphora-agent (pid") && strings.Contains(out, ": delivering;"), out
		})
	})

	t.Run("PUT config changes the facility without a restart", func(t *testing.T) {
		pid := a.PID()
		conf, err := os.ReadFile(a.ConfigFile)
		if err != nil {
			t.Fatal(err)
		}
		newConf := strings.Replace(string(conf), "syslog_log_facility = LOG_LOCAL1", "syslog_log_facility = LOG_LOCAL2", 1)
		if newConf == string(conf) {
			t.Fatalf("cannot edit:\n%s", conf)
		}
		if code, _, body := a.Do(http.MethodPut, "/1.0/config", []byte(newConf)); code != http.StatusAccepted {
			t.Fatalf("PUT /1.0/config: %d %s", code, body)
		}
		// requests logged after the change carry local2: rsyslog's own
		// file shows it (the controller's rules forward local1 only)
		testutil.WaitFor(t, 20*time.Second, func() (bool, string) {
			a.Do(http.MethodGet, "/1.0/details", nil)
			for _, line := range strings.Split(rsyslog.LocalLog(), "\n") {
				if strings.HasPrefix(line, "local2.info amphora-agent[") && strings.Contains(line, "path=/1.0/details") {
					return true, ""
				}
			}
			return false, tail(rsyslog.LocalLog(), 2000)
		})
		if a.PID() != pid {
			t.Error("the agent restarted")
		}
	})
	t.Run("nothing of the agent ever at the tenant target", func(t *testing.T) {
		for _, m := range tenantSrv.Messages() {
			if fromAgent(m) {
				t.Errorf("agent record at the tenant target: %q", m.Raw)
			}
		}
	})

}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
