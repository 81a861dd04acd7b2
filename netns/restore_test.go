package netns

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// others adds what an operator, keepalived or a debugging session may
// add to a running namespace: addresses on lo and on plugged interfaces,
// a static route on a plugged interface, a policy rule.
func others(t *testing.T, ns string) {
	t.Helper()
	for _, argv := range [][]string{
		{"addr", "add", "203.0.113.5/32", "dev", "lo"},
		{"addr", "add", "2001:db8:77::5/128", "dev", "lo", "nodad"},
		{"addr", "add", "198.51.100.150/32", "dev", "eth1"},
		{"addr", "add", "198.18.2.99/24", "dev", "eth2"},
		{"route", "add", "198.18.77.0/24", "via", "198.18.2.254", "dev", "eth2", "proto", "static"},
		{"rule", "add", "from", "198.51.100.150", "lookup", "7", "prio", "31000"},
	} {
		run(t, append([]string{"ip", "-n", ns}, argv...)...)
	}
}

// TestRestoreAtStartLeavesOthersAlone: the restore an agent start runs
// (Up "all") in a running namespace adds what is missing and removes
// nothing (issue 13, defect 4: it removed every permanent address,
// static route and source rule its files did not list; the first check
// below failed before). Removal stays with explicit plugs, with the
// restore of an interface whose plug a crash interrupted, and with the
// restore of a namespace that is new since the last restore (boot).
func TestRestoreAtStartLeavesOthersAlone(t *testing.T) {
	testutil.RequireNetAdmin(t)
	requireNft(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, nsName := newTestManager(t, TopologySingle)
	vipMAC, memMAC := testutil.NeutronMAC(), testutil.NeutronMAC()
	vipNetwork(t, vipMAC)
	memberNetwork(t, memMAC)
	// the first start: namespace created, restore recorded
	if err := m.WriteLoopbackFile(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Up(ctx, "all"); err != nil {
		t.Fatal(err)
	}
	req, err := ParsePlugVIPRequest(vip4, vipBody(vipMAC, 1450))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.PlugVIP(ctx, req); err != nil {
		t.Fatal(err)
	}
	nreq, err := ParsePlugNetworkRequest(memberBody(memMAC, 1500))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.PlugNetwork(ctx, nreq); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.convergePath()); !os.IsNotExist(err) {
		t.Errorf("a finished plug left its mark: %v", err)
	}
	others(t, nsName)
	before := testutil.IPState(t, nsName)

	// an agent restart: a new Manager on the same files
	restarted := New(m.cfg)
	for i := range 2 {
		if w, err := restarted.Up(ctx, "all"); err != nil || len(w) != 0 {
			t.Fatalf("restore %d: %v %v", i, w, err)
		}
		if diff := cmp.Diff(before, testutil.IPState(t, nsName)); diff != "" {
			t.Fatalf("restore %d changed the namespace (-before +after):\n%s", i, diff)
		}
	}

	// a lost address of the agent's own comes back; others' stay
	run(t, "ip", "-n", nsName, "addr", "del", amp6Mem+"/64", "dev", "eth2")
	if _, err := restarted.Up(ctx, "all"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, testutil.IPState(t, nsName)); diff != "" {
		t.Errorf("restore did not put the lost address back alone (-before +after):\n%s", diff)
	}

	// a crash in the middle of a plug that changes eth2's address: the
	// file is new, the kernel still has the old address; the restore
	// finishes the plug (stale address removed) and touches nothing else
	ns := openNS(t, nsName)
	changed := backendFile("eth2", 1500, []FixedIP{{IPAddress: "198.18.2.12", SubnetCIDR: "198.18.2.0/24"}}, false)
	if err := m.markConverge("eth2", memMAC); err != nil {
		t.Fatal(err)
	}
	if err := m.writeInterfaceFile(changed); err != nil {
		t.Fatal(err)
	}
	if _, err := New(m.cfg).Up(ctx, "all"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"198.18.2.12/24"}, globalAddrs(t, ns, "eth2")); diff != "" {
		t.Errorf("eth2 after the interrupted plug was finished (-want +got):\n%s", diff)
	}
	if got := globalAddrs(t, ns, "lo"); !cmp.Equal(got, []string{"127.0.0.1/8", "2001:db8:77::5/128", "203.0.113.5/32", "::1/128"}) {
		t.Errorf("lo after the interrupted plug was finished: %v", got)
	}
	if _, err := os.Stat(m.convergePath()); !os.IsNotExist(err) {
		t.Errorf("the finished restore left the mark: %v", err)
	}

	// a crash in the middle of a new plug, before its NIC was recorded:
	// undone (the file goes, the NIC stays in the root namespace, where
	// the controller's next plug finds it)
	extraMAC := testutil.NeutronMAC()
	testutil.Hotplug(t, "tnh", extraMAC, testutil.NewNetNS(t, "tnX"), "x0")
	if err := m.markConverge("eth3", extraMAC); err != nil {
		t.Fatal(err)
	}
	if err := m.writeInterfaceFile(backendFile("eth3", 0, []FixedIP{{IPAddress: "198.18.7.7", SubnetCIDR: "198.18.7.0/24"}}, false)); err != nil {
		t.Fatal(err)
	}
	if _, err := New(m.cfg).Up(ctx, "all"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.filePath("eth3")); !os.IsNotExist(err) {
		t.Errorf("the interface file of the interrupted plug is still there: %v", err)
	}
	if l, _ := linkByMAC(mustRootHandle(t), extraMAC); l == nil {
		t.Error("the NIC of the interrupted plug left the root namespace")
	}
	if _, err := os.Stat(m.convergePath()); !os.IsNotExist(err) {
		t.Errorf("the undone plug left its mark: %v", err)
	}

	// a crash before the new plug wrote its interface file: only the
	// mark is left, and the restore clears it
	if err := m.markConverge("eth4", extraMAC); err != nil {
		t.Fatal(err)
	}
	if _, err := New(m.cfg).Up(ctx, "all"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.convergePath()); !os.IsNotExist(err) {
		t.Errorf("the mark of a plug that wrote nothing is left: %v", err)
	}

	// a namespace the last restore did not run in (boot) converges
	if err := os.Remove(m.netnsPath()); err != nil {
		t.Fatal(err)
	}
	if _, err := New(m.cfg).Up(ctx, "all"); err != nil {
		t.Fatal(err)
	}
	checkVIPPlumbing(t, ns, vipMAC)
	if got := globalAddrs(t, ns, "lo"); !cmp.Equal(got, []string{"127.0.0.1/8", "::1/128"}) {
		t.Errorf("lo of a new namespace: %v", got)
	}
}
