// Command amphora-vm boots one amphora from the image "make image"
// built, the way Nova and the Octavia controller do (config drive from
// the controller's own templaters, ports hot-plugged through QMP, an HTTP
// load balancer rendered by the controller's templater and uploaded with
// its REST client), prints how to reach it, and keeps it running until
// interrupted; then it removes everything it created. "make vm" runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/octavia-go/amphora-agent/test/vm"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "amphora-vm:", err)
		os.Exit(1)
	}
}

func run() error {
	image := flag.String("image", envOr("AMPHORA_IMAGE", "bin/amphora-x64-haproxy.qcow2"), "amphora image (qcow2, used through an overlay)")
	dir := flag.String("dir", "", "work directory (default: a new one under /tmp, removed at the end)")
	noLB := flag.Bool("no-lb", false, "boot only: no ports, no load balancer")
	flag.Parse()
	if os.Geteuid() != 0 {
		return errors.New("must run as root (network namespaces, taps, qemu)")
	}
	if err := vm.RequireTools(); err != nil {
		return err
	}
	keep := *dir != ""
	if !keep {
		d, err := os.MkdirTemp("", "amphora-vm-")
		if err != nil {
			return err
		}
		*dir = d
		defer os.RemoveAll(d)
	} else if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	step("building the lab (namespaces, bridges, controller receivers, members)")
	lab, err := vm.NewLab(ctx, vm.LabOptions{Dir: *dir, Image: *image})
	if err != nil {
		return err
	}
	defer func() {
		step("powering off and removing the lab")
		if err := lab.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "amphora-vm: cleanup:", err)
		}
	}()
	step("accelerator: " + lab.Accel.String())
	step("rendering the amphora's config drive with the controller's CertComputeCreate task; booting")
	amp, err := lab.CreateAmphora(ctx, vm.AmphoraOptions{})
	if err != nil {
		return err
	}
	bootCtx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	at, err := amp.AwaitAnswer(bootCtx)
	if err != nil {
		return fmt.Errorf("%w\nconsole (%s):\n%s", err, amp.Guest.Console, amp.Guest.ConsoleTail(40))
	}
	step(fmt.Sprintf("agent answered over mTLS %v after boot", at.Sub(amp.Guest.Started).Round(100*time.Millisecond)))
	if err := amp.AwaitSSH(bootCtx); err != nil {
		return err
	}
	lbLine := ""
	if !*noLB {
		step("hot-plugging the VIP and member ports (QMP), plugging them through the agent")
		if _, _, err := amp.PlugPorts(bootCtx); err != nil {
			return err
		}
		lb := vm.NewHTTPLoadBalancer()
		cfg, err := lb.Render(bootCtx, amp)
		if err != nil {
			return err
		}
		if err := lb.Deploy(bootCtx, amp, cfg); err != nil {
			return err
		}
		lbLine = fmt.Sprintf("  load balancer %s: HTTP listener %s on %s, PROMETHEUS listener %s on %s\n"+
			"    try: ip netns exec %s curl -s %s\n         ip netns exec %s curl -s %s\n",
			lb.LBID, lb.ListenerID, lb.URL(), lb.PromListenerID, lb.MetricsURL(),
			lab.Client.Name, lb.URL(), lab.Client.Name, lb.MetricsURL())
	}
	key, _ := lab.SSHKey()
	fmt.Printf(`
amphora %s is running (%s)
  lab namespaces: %s (hypervisor; controller 198.18.10.1 on lb-mgmt-net), %s (client), %s (members)
  ssh:      ip netns exec %s ssh %s
  agent:    ip netns exec %s curl -s --cacert %s --cert %s --resolve %s:9443:%s https://%s:9443/1.0/info
%s  console:  %s
  QMP:      socat - UNIX-CONNECT:%s
  heartbeats received so far: %d (on 198.18.10.1:5555)
Ctrl-C powers it off and removes everything.
`, amp.ID, lab.Accel.Accel, lab.HV.Name, lab.Client.Name, lab.Members.Name,
		lab.HV.Name, strings.Join(quoteAll(amp.SSHArgs(key, "")), " "),
		lab.HV.Name, amp.PKI.ServerCA, amp.PKI.ClientPEM, amp.ID, amp.MgmtIP, amp.ID,
		lbLine, amp.Guest.Console, filepath.Join(amp.Dir, "qmp.sock"), lab.Heartbeats.Len())
	select {
	case <-ctx.Done():
	case <-amp.Guest.Exited():
		step("the guest exited")
	}
	return nil
}

func step(s string) {
	fmt.Printf("%s amphora-vm: %s\n", time.Now().Format("15:04:05"), s)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func quoteAll(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " '\"") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return out
}
