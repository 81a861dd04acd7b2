package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestActiveStandbyVM is scenario 7 of issue 11: two amphorae (an
// ACTIVE_STANDBY pair, booted from the image like scenario 1) on one VIP
// network, haproxy and keepalived configurations from the controller's
// own templaters, a client probing the VIP every 100 ms. The MASTER's
// haproxy is killed and kept down, then the new MASTER is powered off
// (QMP quit, a host losing power): the client's outage is measured for
// each.
func TestActiveStandbyVM(t *testing.T) {
	v := newVMTest(t)
	amps := []*Amphora{v.boot(0, "ACTIVE_STANDBY"), v.boot(1, "ACTIVE_STANDBY")}
	lb := NewHTTPLoadBalancer()
	configs := make([]string, len(amps))
	renderErrs := make([]error, len(amps))
	var wg sync.WaitGroup
	for i, a := range amps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			configs[i], renderErrs[i] = lb.Render(ctx, a)
		}()
	}
	wg.Wait()
	for _, err := range renderErrs {
		v.must(err)
	}

	ok := v.run("pair up", func(t *testing.T) {
		errs := make([]error, len(amps))
		for i, a := range amps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := v.ctx(12 * time.Minute)
				defer cancel()
				at, err := a.AwaitAnswer(ctx)
				if err == nil {
					v.figure("A/S: boot -> first mTLS answer", at.Sub(a.Guest.Started))
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for _, err := range errs {
			v.must(err)
		}
		// The controller's flow for a new ACTIVE_STANDBY load balancer:
		// plug the VIP and member ports, learn the VRRP interface, upload
		// and start haproxy, then keepalived.
		ifaces := make([]string, len(amps))
		for i, a := range amps {
			ctx, cancel := v.ctx(3 * time.Minute)
			_, _, err := a.PlugPorts(ctx)
			cancel()
			v.must(err)
			res := v.octavia(a, 0, Call("get_interface", AmphoraVRRPIP(i)))
			var iface struct {
				Interface string `json:"interface"`
			}
			if err := json.Unmarshal(res[0], &iface); err != nil || iface.Interface == "" {
				t.Fatalf("get_interface: %s", res[0])
			}
			ifaces[i] = iface.Interface
		}
		ka := renderKeepalived(t, lb.LBID, amps, ifaces)
		for i, a := range amps {
			v.octavia(a, http.StatusAccepted,
				Call("upload_config", lb.LBID, configs[i]), Call("start_listener", lb.LBID))
			v.octavia(a, http.StatusOK, Call("upload_vrrp_config", ka[a.ID]))
			v.octavia(a, http.StatusAccepted, Call("start_vrrp"))
		}
		v.awaitHolder(amps, amps[0], 2*time.Minute)
		v.reachBoth("through the pair's VIP", lb.URL())
	})
	if !ok {
		t.FailNow()
	}

	p := v.startProbe(lb.URL(), 100*time.Millisecond, time.Second, 20000, vmBudget)

	v.run("7a haproxy killed on the MASTER", func(t *testing.T) {
		v.awaitStable(p, 5*time.Second)
		// haproxy dies and cannot come back (its binary now fails):
		// systemd keeps restarting it in vain, the VRRP check fails,
		// the BACKUP takes the VIP.
		t0 := time.Now()
		v.ssh(amps[0], "sudo sh -c '"+haproxyMounted+" || mount --bind /bin/false /usr/sbin/haproxy; systemctl kill --signal=SIGKILL haproxy-"+lb.LBID+".service; "+haproxyMounted+"'")
		// The failover takes at least two check intervals (10 s): it
		// ends after the ssh command returned.
		outage := v.awaitRecovery(p, t0, time.Now(), 3*time.Minute, 5*time.Second, "haproxy killed on the MASTER")
		v.figure("A/S: haproxy killed on MASTER -> outage", outage)
		t.Logf("failed requests: %s", p.describe(t0, 8))
		v.awaitHolder(amps, amps[1], 30*time.Second)
		// haproxy can start again: once its check passes (rise 2),
		// amphora 0 takes the VIP back. Octavia renders "nopreempt", but
		// keepalived ignores it for an instance whose initial state is
		// MASTER, which is how the controller renders the MASTER.
		t1 := time.Now()
		v.ssh(amps[0], "sudo sh -c 'for i in 1 2 3; do "+haproxyMounted+" && umount /usr/sbin/haproxy; done; ! "+haproxyMounted+"'")
		v.awaitHolder(amps, amps[0], 90*time.Second)
		v.awaitStable(p, 3*time.Second)
		out, failed, _ := p.outage(t1)
		v.figure("A/S: MASTER back (preempts) -> outage", fmt.Sprintf("%v (%d failed requests)", out.Round(100*time.Millisecond), failed))
		t.Logf("failed requests: %s", p.describe(t1, 8))
	})

	v.run("7b MASTER powered off", func(t *testing.T) {
		v.awaitHolder(amps, amps[0], 30*time.Second)
		v.awaitStable(p, 5*time.Second)
		// The host of the MASTER loses power: qemu quits at once.
		t0 := time.Now()
		ctx, cancel := v.ctx(20 * time.Second)
		defer cancel()
		v.must(amps[0].Guest.QMP.Quit(ctx))
		v.must(amps[0].Guest.WaitExit(ctx))
		outage := v.awaitRecovery(p, t0, time.Now(), 2*time.Minute, 5*time.Second, "MASTER powered off")
		v.figure("A/S: MASTER powered off (quit) -> outage", outage)
		t.Logf("failed requests: %s", p.describe(t0, 8))
		v.awaitHolder(amps[1:], amps[1], 30*time.Second)
	})
	p.Stop()
}

// haproxyMounted is a shell test: /bin/false is mounted over haproxy.
const haproxyMounted = "grep -q \" /usr/sbin/haproxy \" /proc/self/mountinfo"

// awaitStable waits (bounded) until the probe's last d were all answered.
func (v *vmTest) awaitStable(p *probe, d time.Duration) {
	v.t.Helper()
	ctx, cancel := v.ctx(2 * time.Minute)
	defer cancel()
	for !p.stableFor(d) {
		select {
		case <-ctx.Done():
			v.t.Fatalf("the VIP does not answer steadily")
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// awaitHolder waits (bounded) until want, alone among amps, holds the
// VIP on its VRRP interface.
func (v *vmTest) awaitHolder(amps []*Amphora, want *Amphora, limit time.Duration) {
	v.t.Helper()
	ctx, cancel := v.ctx(limit)
	defer cancel()
	var state []string
	for {
		state = state[:0]
		holders := map[*Amphora]bool{}
		for _, a := range amps {
			// Each round completes (ssh under TCG takes seconds), however
			// short limit is.
			cctx, ccancel := context.WithTimeout(context.Background(), 20*time.Second)
			out, err := a.SSH(cctx, "sudo ip -n amphora-haproxy -br addr")
			ccancel()
			if err != nil {
				out = err.Error()
			}
			state = append(state, strings.TrimSpace(out))
			if err == nil && strings.Contains(out, " "+VIP+"/32") {
				holders[a] = true
			}
		}
		if len(holders) == 1 && holders[want] {
			return
		}
		select {
		case <-ctx.Done():
			v.t.Fatalf("amphora %d does not hold the VIP alone after %v: %q", want.Index, limit, state)
		case <-time.After(time.Second):
		}
	}
}

// renderKeepalived renders the pair's VRRP configurations with the
// controller's keepalived templater (test/interop/render_keepalived.py):
// amphora 0 MASTER (priority 100), amphora 1 BACKUP (90).
func renderKeepalived(t *testing.T, lbID string, amps []*Amphora, ifaces []string) map[string]string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	type ampSpec struct {
		ID            string `json:"id"`
		BasePath      string `json:"base_path"`
		VRRPIP        string `json:"vrrp_ip"`
		VRRPInterface string `json:"vrrp_interface"`
		Role          string `json:"role"`
		Priority      int    `json:"priority"`
	}
	var list []ampSpec
	for i, a := range amps {
		role, prio := "MASTER", 100
		if i > 0 {
			role, prio = "BACKUP", 90
		}
		list = append(list, ampSpec{ID: a.ID, BasePath: "/var/lib/octavia", VRRPIP: AmphoraVRRPIP(i),
			VRRPInterface: ifaces[i], Role: role, Priority: prio})
	}
	in, err := json.Marshal(map[string]any{"lb_id": lbID, "vip": VIP, "vip_cidr": VIPCIDR, "gateway": VIPGateway, "amphorae": list})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", filepath.Join(root, "test/interop/render_keepalived.py"))
	cmd.Stdin = bytes.NewReader(in)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + t.TempDir()}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("render_keepalived.py: %v\n%s", err, stderr.String())
	}
	var res map[string]string
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	return res
}
