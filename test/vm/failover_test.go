package vm

import (
	"bytes"
	"context"
	"encoding/json"
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
		v.awaitHolder(amps, 0, 2*time.Minute)
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
		v.ssh(amps[0], "sudo sh -c 'mount --bind /bin/false /usr/sbin/haproxy && systemctl kill --signal=SIGKILL haproxy-"+lb.LBID+".service'")
		outage := v.awaitRecovery(p, t0, 3*time.Minute, 5*time.Second, "haproxy killed on the MASTER")
		v.figure("A/S: haproxy killed on MASTER -> outage", outage)
		v.awaitHolder(amps, 1, 30*time.Second)
		// haproxy can start again: amphora 0 recovers as BACKUP
		// (nopreempt), the VIP stays where it is, nothing fails.
		t1 := time.Now()
		v.ssh(amps[0], "sudo umount /usr/sbin/haproxy")
		ctx, cancel := v.ctx(time.Minute)
		defer cancel()
		for {
			out, _ := amps[0].SSH(ctx, "systemctl is-active haproxy-"+lb.LBID+".service")
			if strings.TrimSpace(out) == "active" {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("haproxy of amphora 0 not active again: %q", out)
			}
			time.Sleep(time.Second)
		}
		time.Sleep(15 * time.Second) // two check intervals: rise 2
		if f := p.failed(t1, time.Now()); len(f) > 0 {
			t.Errorf("%d requests failed while amphora 0's haproxy came back (first: %v)", len(f), f[0].err)
		}
		v.awaitHolder(amps, 1, 5*time.Second)
	})

	v.run("7b MASTER powered off", func(t *testing.T) {
		v.awaitStable(p, 5*time.Second)
		t0 := time.Now()
		ctx, cancel := v.ctx(20 * time.Second)
		defer cancel()
		v.must(amps[1].Guest.QMP.Quit(ctx))
		v.must(amps[1].Guest.WaitExit(ctx))
		outage := v.awaitRecovery(p, t0, 2*time.Minute, 5*time.Second, "MASTER powered off")
		v.figure("A/S: MASTER powered off (quit) -> outage", outage)
		v.awaitHolder(amps[:1], 0, 30*time.Second)
	})
	p.Stop()
}

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

// awaitHolder waits (bounded) until amphora want, alone among amps,
// holds the VIP on its VRRP interface.
func (v *vmTest) awaitHolder(amps []*Amphora, want int, limit time.Duration) {
	v.t.Helper()
	ctx, cancel := v.ctx(limit)
	defer cancel()
	var state []string
	for {
		state = state[:0]
		holders := map[int]bool{}
		for i, a := range amps {
			cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
			out, err := a.SSH(cctx, "ip -n amphora-haproxy -br addr")
			ccancel()
			state = append(state, strings.TrimSpace(out))
			if err == nil && strings.Contains(out, " "+VIP+"/32") {
				holders[i] = true
			}
		}
		if len(holders) == 1 && holders[want] {
			return
		}
		select {
		case <-ctx.Done():
			v.t.Fatalf("amphora %d does not hold the VIP alone after %v: %q", want, limit, state)
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
