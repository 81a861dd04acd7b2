package testutil

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Object ids of the statistics fixture: the ids of HEARTBEAT.md §3.2.
const (
	FixtureL1 = "8a1b2c3d-0000-4000-8000-000000000001" // HTTP listener, a member of every kind
	FixtureL2 = "8a1b2c3d-0000-4000-8000-000000000002" // TCP listener, exact byte counts
	FixtureP1 = "9a1b2c3d-0000-4000-8000-0000000000aa:" + FixtureL1
	FixtureP2 = "9a1b2c3d-0000-4000-8000-0000000000bb:" + FixtureL2
	// FixtureMember is the prefix of the members of FixtureP1: + "1".."6".
	FixtureMember    = "aaaaaaaa-0000-4000-8000-00000000000"
	FixtureTCPMember = "bbbbbbbb-0000-4000-8000-000000000001"
)

// statsFixtureConfig is the load balancer of the statistics fixture: one
// HTTP listener whose pool has a member of every kind, one TCP listener,
// and the internal prometheus proxy (which the heartbeat leaves out). The
// user-level socket is what Octavia renders; the admin-level one also
// shows addresses and cookies (member 3's cookie carries UTF-8, a comma
// and a quote).
const statsFixtureConfig = `global
    stats socket {{dir}}/u.sock mode 0600 level user
    stats socket {{dir}}/a.sock mode 0600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # checks every 100 ms must not time out on a loaded test machine
    # (the check timeout defaults to the interval)
    timeout check 2s
frontend ` + FixtureL1 + `
    bind 127.0.0.1:{{fe1}}
    option socket-stats
    default_backend ` + FixtureP1 + `
backend ` + FixtureP1 + `
    cookie SRV insert indirect nocache
    server ` + FixtureMember + `1 {{member}} check inter 100ms fall 1 rise 1
    server ` + FixtureMember + `2 127.0.0.1:{{closed}} check inter 100ms fall 1 rise 1
    server ` + FixtureMember + `3 {{member}} cookie "é,x\"y"
    server ` + FixtureMember + `4 {{member}} check disabled
    server ` + FixtureMember + `5 {{member}} check inter 100ms fall 1 rise 1 weight 0
    server ` + FixtureMember + `6 {{member}} weight 0
frontend ` + FixtureL2 + `
    mode tcp
    bind 127.0.0.1:{{fe2}}
    default_backend ` + FixtureP2 + `
backend ` + FixtureP2 + `
    mode tcp
    server ` + FixtureTCPMember + ` {{member}}
frontend prometheus-exporter-internal-endpoint
    bind 127.0.0.1:{{prom}}
    http-request use-service prometheus-exporter if { path /metrics }
    default_backend prometheus-exporter-internal
backend prometheus-exporter-internal
    server prometheus-internal {{member}}
`

// FixtureMembers are the member statuses the fixture reports once its
// health checks settled, by pool.
func FixtureMembers() map[string]map[string]string {
	return map[string]map[string]string{
		FixtureP1: {
			FixtureMember + "1": "UP",
			FixtureMember + "2": "DOWN",
			FixtureMember + "3": "no check",
			FixtureMember + "4": "MAINT",
			FixtureMember + "5": "DRAIN",
			FixtureMember + "6": "no check",
		},
		FixtureP2: {FixtureTCPMember: "no check"},
	}
}

// StatsFixture is the one real haproxy the statistics tests (haproxy's
// stats client, the heartbeat) read, on loopback, without root.
type StatsFixture struct {
	UserSock, AdminSock string // stats sockets, levels user and admin
	FE1, FE2            string // addresses of listeners 1 (HTTP) and 2 (TCP)
	HAProxy             *HAProxy
}

// StartStatsFixture runs haproxy on the fixture's configuration, its
// members served by a local Member, and returns once members (the
// caller's stats client: the statuses by pool, read on a socket) reports
// FixtureMembers. It skips the test when haproxy is not installed.
func StartStatsFixture(t testing.TB, members func(ctx context.Context, sock string) (map[string]map[string]string, error)) *StatsFixture {
	t.Helper()
	RequireBinary(t, "haproxy")
	member := StartLocalMember(t, "member")
	dir := ShortDir(t, "hx")
	f := &StatsFixture{UserSock: filepath.Join(dir, "u.sock"), AdminSock: filepath.Join(dir, "a.sock")}
	fe1, fe2 := FreePort(t), FreePort(t)
	f.FE1, f.FE2 = fmt.Sprintf("127.0.0.1:%d", fe1), fmt.Sprintf("127.0.0.1:%d", fe2)
	cfg := strings.NewReplacer(
		"{{dir}}", dir, "{{fe1}}", fmt.Sprint(fe1), "{{fe2}}", fmt.Sprint(fe2), "{{prom}}", fmt.Sprint(FreePort(t)),
		"{{closed}}", fmt.Sprint(FreePort(t)), "{{member}}", member.Addr,
	).Replace(statsFixtureConfig)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	f.HAProxy = StartHAProxy(t, path, func(ctx context.Context) error {
		_, err := members(ctx, f.UserSock)
		return err
	})
	want := fmt.Sprint(FixtureMembers())
	WaitFor(t, 10*time.Second, func() (bool, string) {
		got, err := members(context.Background(), f.UserSock)
		if err != nil {
			return false, err.Error()
		}
		return fmt.Sprint(got) == want, fmt.Sprintf("members %v", got)
	})
	return f
}
