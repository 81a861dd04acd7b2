package netns

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// PlugResult is a successful plug.
type PlugResult struct {
	Interface string   // name inside the namespace
	Details   string   // the "details" text of the 202 answer
	Warnings  []string // partial failures (routes that could not be added, ...)
}

// PlugVIP plugs the VIP port (POST /1.0/plug/vip/<vip>): the NIC with the
// request's MAC is moved from the root namespace into the data-plane
// namespace as eth1, its VIP interface file is written and applied.
//
// Errors: *BadRequestError (invalid request), ErrInterfaceExists (the MAC
// is already in the namespace), ErrNoInterface (MAC not found; a PCI
// rescan was triggered), *PlugError (found but could not be configured;
// files and NIC placement are rolled back), anything else is internal.
func (m *Manager) PlugVIP(ctx context.Context, req *PlugVIPRequest) (*PlugResult, error) {
	plan, err := req.plan()
	if err != nil {
		return nil, err
	}
	topology := m.topology()
	defer m.lock()()
	ns, err := m.ensure()
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	if l, err := linkByMAC(ns.Handle(), req.MACAddress); err != nil {
		return nil, err
	} else if l != nil {
		return nil, ErrInterfaceExists
	}
	root, err := m.rootLinkByMAC(req.MACAddress)
	if err != nil {
		return nil, err
	}
	file := vipFile(primaryInterface, req.MTU, plan, nil, topology, req.IsSRIOV)
	warn, err := m.plugNew(ctx, ns, root, req.MACAddress, file, MsgPlugVIPFailed)
	if err != nil {
		return nil, err
	}
	texts := make([]string, 0, len(plan.vips))
	for _, v := range plan.vips {
		texts = append(texts, v.text)
	}
	m.log.Info("VIP plugged", "ns", ns.Name(), "interface", primaryInterface, "mac", req.MACAddress, "vips", strings.Join(texts, ","))
	return &PlugResult{
		Interface: primaryInterface,
		Details:   fmt.Sprintf("VIPs plugged on interface %s: %s", primaryInterface, strings.Join(texts, ", ")),
		Warnings:  warn,
	}, nil
}

// PlugNetwork plugs a member-network port, or updates a port already in
// the namespace (POST /1.0/plug/network). A new NIC becomes the first
// free ethN (N ≥ 2). With VIPNetInfo on an existing port, its VIP file is
// rewritten with the fixed IPs as extra addresses. The fixed IPs are
// advertised (GARP/NA) afterwards.
//
// Errors: *BadRequestError, ErrNoInterface, *PlugError, internal.
func (m *Manager) PlugNetwork(ctx context.Context, req *PlugNetworkRequest) (*PlugResult, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	res, err := m.plugNetwork(ctx, req)
	if err != nil {
		return nil, err
	}
	for _, f := range req.FixedIPs {
		if err := m.Advertise(ctx, f.IPAddress); err != nil {
			m.log.Warn("member address not advertised", "ns", m.cfg.Namespace, "interface", res.Interface, "address", f.IPAddress, "err", err)
		}
	}
	return res, nil
}

func (m *Manager) plugNetwork(ctx context.Context, req *PlugNetworkRequest) (*PlugResult, error) {
	topology := m.topology()
	defer m.lock()()
	ns, err := m.ensure()
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	existing, err := linkByMAC(ns.Handle(), req.MACAddress)
	if err != nil {
		return nil, err
	}
	if existing != nil {
		name := existing.Attrs().Name
		var file *InterfaceFile
		failMsg := MsgPlugNetFailed
		if v := req.VIPNetInfo; v != nil {
			plan, err := buildVIPPlan(v.VIP, v.SubnetCIDR, v.Gateway, v.HostRoutes, v.AdditionalVIPs, v.VRRPIP, MsgInvalidPortInfo)
			if err != nil {
				return nil, err
			}
			file = vipFile(name, req.MTU, plan, req.FixedIPs, topology, req.IsSRIOV)
			failMsg = MsgPlugVIPNetFailed
		} else {
			file = backendFile(name, req.MTU, req.FixedIPs, req.IsSRIOV)
		}
		// A crash from here on leaves the interface to be converged by
		// the restore at the next start (its stale addresses go then).
		if err := m.markConverge(name, req.MACAddress); err != nil {
			return nil, err
		}
		if err := m.writeInterfaceFile(file); err != nil {
			return nil, err
		}
		if err := m.recordPlugged(req.MACAddress, name); err != nil {
			return nil, err
		}
		var warn warnings
		if err := m.upInterface(ctx, ns, file, converge, &warn); err != nil {
			return nil, &PlugError{Message: failMsg, Details: err.Error(), Err: err}
		}
		m.doneConverge(name)
		m.log.Info("interface updated", "ns", ns.Name(), "interface", name, "mac", req.MACAddress)
		return &PlugResult{Interface: name, Details: "Updated existing interface " + name, Warnings: warn}, nil
	}
	root, err := m.rootLinkByMAC(req.MACAddress)
	if err != nil {
		return nil, err
	}
	name, err := nextFreeName(ns.Handle())
	if err != nil {
		return nil, err
	}
	file := backendFile(name, req.MTU, req.FixedIPs, req.IsSRIOV)
	warn, err := m.plugNew(ctx, ns, root, req.MACAddress, file, MsgPlugNetFailed)
	if err != nil {
		return nil, err
	}
	m.log.Info("network plugged", "ns", ns.Name(), "interface", name, "mac", req.MACAddress)
	return &PlugResult{Interface: name, Details: "Plugged on interface " + name, Warnings: warn}, nil
}

// plugNew writes the interface file and the plugged-interfaces entry,
// moves the root-namespace link into the namespace under the file's name
// and applies the file. On failure every step is undone (the NIC goes
// back to the root namespace under its old name, files are restored), so
// that the controller's retry starts from scratch.
func (m *Manager) plugNew(ctx context.Context, ns *Namespace, root netlink.Link, mac string, file *InterfaceFile, failMsg string) (w warnings, err error) {
	// A crash from here on leaves the interface to be converged by the
	// restore at the next start; a plug that ends, done or undone,
	// clears the mark (deferred first: it runs after the undo).
	if err := m.markConverge(file.Name, mac); err != nil {
		return nil, err
	}
	defer m.doneConverge(file.Name)
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	path := m.filePath(file.Name)
	oldFile, rerr := os.ReadFile(path)
	fileExisted := rerr == nil
	if err := m.writeInterfaceFile(file); err != nil {
		return nil, err
	}
	undo = append(undo, func() {
		var uerr error
		if fileExisted {
			uerr = fsutil.WriteFile(path, oldFile, 0o644)
		} else {
			uerr = fsutil.Remove(path)
		}
		if uerr != nil {
			m.log.Error("restore interface file failed", "interface", file.Name, "err", uerr)
		}
	})
	oldPlugged, rerr := os.ReadFile(m.cfg.PluggedInterfacesFile)
	pluggedExisted := rerr == nil
	if err := m.recordPlugged(mac, file.Name); err != nil {
		return nil, fmt.Errorf("update %s: %w", m.cfg.PluggedInterfacesFile, err)
	}
	undo = append(undo, func() {
		if uerr := m.restorePlugged(oldPlugged, pluggedExisted); uerr != nil {
			m.log.Error("restore plugged interfaces file failed", "err", uerr)
		}
	})
	rootName := root.Attrs().Name
	if err := setLinkNetnsName(nil, root.Attrs().Index, ns.Fd(), file.Name); err != nil {
		return nil, &PlugError{Message: failMsg, Details: fmt.Sprintf("move %s into namespace %s as %s: %v", rootName, ns.Name(), file.Name, err), Err: err}
	}
	undo = append(undo, func() {
		if uerr := m.moveBack(ns, file.Name, rootName); uerr != nil {
			m.log.Error("moving NIC back to the root namespace failed", "ns", ns.Name(), "interface", file.Name, "err", uerr)
		}
	})
	if err := m.upInterface(ctx, ns, file, converge, &w); err != nil {
		return nil, &PlugError{Message: failMsg, Details: err.Error(), Err: err}
	}
	return w, nil
}

// moveBack returns a link from the namespace to the root namespace.
func (m *Manager) moveBack(ns *Namespace, name, rootName string) error {
	l, err := ns.Handle().LinkByName(name)
	if err != nil {
		return err
	}
	_ = ns.Handle().LinkSetDown(l)
	rootFd, err := rootNamespaceFd()
	if err != nil {
		return err
	}
	defer rootFd.Close()
	// The request must come from the namespace holding the link: use a
	// netlink socket bound there (no thread switch for netlink work).
	sock, err := nl.GetNetlinkSocketAt(ns.fd, vnetns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket in netns %s: %w", ns.Name(), err)
	}
	defer sock.Close()
	return setLinkNetnsName(sock, l.Attrs().Index, int(rootFd), rootName)
}

// rootNamespaceFd opens the agent's own (root) network namespace.
func rootNamespaceFd() (vnetns.NsHandle, error) {
	runtime.LockOSThread() // the thread cannot be switched by others while we read it
	defer runtime.UnlockOSThread()
	return vnetns.Get()
}

// setLinkNetnsName moves a link into the namespace targetFd and renames it
// there, in one netlink request (the name is checked in the target
// namespace). sock is a netlink socket of the namespace that holds the
// link; nil means the agent's own (root) namespace.
func setLinkNetnsName(sock *nl.NetlinkSocket, index, targetFd int, name string) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	if sock != nil {
		req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: sock}}
	}
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	b := make([]byte, 4)
	nl.NativeEndian().PutUint32(b, uint32(targetFd))
	req.AddData(nl.NewRtAttr(unix.IFLA_NET_NS_FD, b))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}
