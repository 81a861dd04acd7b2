//go:build tools

// Package depspin pins dependencies while the packages that use them are being written.
package depspin

import (
	_ "github.com/coreos/go-systemd/v22/daemon"
	_ "github.com/coreos/go-systemd/v22/dbus"
	_ "github.com/coreos/go-systemd/v22/journal"
	_ "github.com/gin-gonic/gin"
	_ "github.com/godbus/dbus/v5"
	_ "github.com/google/go-cmp/cmp"
	_ "github.com/google/nftables"
	_ "github.com/google/renameio/v2"
	_ "github.com/gopacket/gopacket/layers"
	_ "github.com/mdlayher/packet"
	_ "github.com/vishvananda/netlink"
	_ "github.com/vishvananda/netns"
	_ "golang.org/x/sys/unix"
	_ "gopkg.in/ini.v1"
)
