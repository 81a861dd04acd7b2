package netns

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/octavia-go/amphora-agent/internal/execx"
	"github.com/octavia-go/amphora-agent/internal/testutil"
	"github.com/vishvananda/netlink"
)

func requireNft(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/nft"); err != nil {
		t.Skip("nftables 'nft' is not installed (/usr/sbin/nft)")
	}
}

func run(t *testing.T, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := execx.Run(ctx, argv...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return string(out)
}

// tryRun runs a cleanup command, ignoring failures (the object may be gone).
func tryRun(argv ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, _ = execx.Run(ctx, argv...)
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newTestManager returns a Manager on a private data-plane namespace
// (tnA-<random>) with all its files in a temporary directory. The
// namespace is deleted at cleanup.
func newTestManager(t *testing.T, topology string, opts ...func(*Config)) (*Manager, string) {
	t.Helper()
	dir := t.TempDir()
	name := "tnA-" + testutil.RandomSuffix(4)
	rescan := filepath.Join(dir, "pci-rescan")
	if err := os.WriteFile(rescan, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Namespace:             name,
		NetworkDir:            filepath.Join(dir, "interfaces"),
		PluggedInterfacesFile: filepath.Join(dir, "plugged_interfaces"),
		RulesFile:             filepath.Join(dir, "nftables-vip.rules"),
		PCIRescanPath:         rescan,
		PCIRescanInterval:     time.Hour,
		DHClientPath:          filepath.Join(dir, "no-dhclient"),
		AdvertiseInterval:     50 * time.Millisecond,
		Topology:              func() string { return topology },
		Logger:                slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, o := range opts {
		o(&cfg)
	}
	m := New(cfg)
	t.Cleanup(func() {
		if err := DeleteNamespace(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return m, name
}

func openNS(t *testing.T, name string) *Namespace {
	t.Helper()
	ns, err := OpenNamespace(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

func linkIn(t *testing.T, ns *Namespace, name string) netlink.Link {
	t.Helper()
	return testutil.LinkOf(t, ns.Handle(), name)
}

// globalAddrs lists the addresses of a link except IPv6 link-local ones.
func globalAddrs(t *testing.T, ns *Namespace, ifname string) []string {
	return testutil.LinkAddrs(t, ns.Handle(), ifname)
}

// staticRoutes lists the static-protocol routes of a link, all tables, as
// "dst via gw src s table n" strings.
func staticRoutes(t *testing.T, ns *Namespace, ifname string) []string {
	return testutil.StaticRoutes(t, ns.Handle(), ifname)
}

// sourceRules lists the policy rules with a source, as "from s/n lookup t prio p proto x".
func sourceRules(t *testing.T, ns *Namespace) []string { return testutil.SourceRules(t, ns.Handle()) }

// masqRules counts, per chain of the masquerade table, the rules tagged
// with ifname.
func masqRules(t *testing.T, ns *Namespace, ipv6 bool, ifname string) map[string]int {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	fam := nftables.TableFamilyIPv4
	if ipv6 {
		fam = nftables.TableFamilyIPv6
	}
	out := map[string]int{}
	chains, err := c.ListChainsOfTableFamily(fam)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range chains {
		if ch.Table.Name != masqTableName(ipv6) {
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			if ruleTag(r) == ifname {
				out[ch.Name]++
			}
		}
	}
	return out
}

// serveHTTP serves a member inside namespace ns, on addr; its
// MemberAddressesPath tells which local and remote addresses it saw.
func serveHTTP(t *testing.T, ns *Namespace, addr string) {
	t.Helper()
	var ln net.Listener
	err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns.Name(), err)
	}
	testutil.ServeMember(t, ln, "member")
}

// httpGet fetches url (a member's addresses) from namespace ns with
// source address src ("" = kernel's choice) and returns the body.
func httpGet(ns *Namespace, src, url string, timeout time.Duration) (string, error) {
	body, _, err := testutil.GetIn(ns.Do, src, url, timeout)
	return body, err
}
