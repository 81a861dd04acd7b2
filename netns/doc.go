// Package netns is the network plumbing of the amphora agent: the
// data-plane network namespace (amphora-haproxy), the NICs Nova hot-plugs
// into the amphora, their interface description files, and everything the
// HTTP handlers for the plug, interface and firewall-rule endpoints need.
//
// Every netlink operation on the data-plane namespace goes through a
// netlink handle opened at that namespace. Threads switch namespace only
// to create sockets (GARP/NA senders, test listeners), to write
// /proc/sys/net values and to run nft/dhclient there, always in a
// dedicated goroutine that locks its thread and restores it before
// unlocking (see Namespace.Do).
//
// Reads never create the namespace: when it is absent, lookups answer
// "not found" (ErrNamespaceAbsent is wrapped in the error). Plugging and
// Up create it deliberately, with loopback up and the per-namespace
// sysctls the amphora-netns unit of the reference applies.
//
// The interface files and the plugged-interfaces list use the reference
// agent's formats, so files written by either agent are read by the other
// (files of 11.0.0 agents without if_type/is_sriov are accepted).
// Instead of running the amphora-interface program, Manager applies the
// files directly: addresses, routes, policy rules and MTU are reconciled
// with netlink on every call, and the LVS masquerade/notrack rules the
// reference adds with lvs-masquerade.sh are kept in nftables idempotently.
package netns
