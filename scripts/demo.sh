#!/bin/bash
# End-to-end demo of the amphora agent on this machine, as root:
#   - a development PKI shaped like Octavia's (amphora id in the server cert),
#   - the agent, driven over mutual TLS with curl the way the controller does,
#   - a Nova-like hot-plug of a VIP port and a member port (veths created in
#     the root namespace with Neutron-style MACs, moved and configured by the
#     agent into its data-plane namespace),
#   - two member HTTP servers, a load-balancer config rendered by Octavia's own
#     templater, uploaded, validated and started through the API,
#   - requests from a client namespace spread over both members,
#   - one heartbeat received over UDP and decoded with Octavia's own code,
#   - a PROMETHEUS listener scraped through the VIP: one Octavia metric from
#     the Prometheus proxy the agent runs next to haproxy.
# Everything lives in namespaces named amdemo-* and a temporary directory,
# and is removed at the end (also on failure or Ctrl-C).
set -euo pipefail

BIN=${1:-bin/amphora-agent}
BIN=$(readlink -f "$BIN")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates network namespaces)" >&2; exit 1; }
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
PY=/usr/bin/python3

AMP=6e9fd1a2-1234-4cde-8f00-aabbccddeeff
LB=0ab6c3b4-5d1e-4f2a-9c3b-7d8e9f0a1b2c
LISTENER=1bc7d4c5-6e2f-4a3b-8d4c-8e9f0a1b2c3d
POOL=2cd8e5d6-7f3a-4b4c-9e5d-9f0a1b2c3d4e
M1=3de9f6e7-8a4b-4c5d-8f6e-0a1b2c3d4e5f
M2=4efa07f8-9b5c-4d6e-9a7f-1b2c3d4e5f6a
PROM_LISTENER=5f0b18a9-ac6d-4e7f-8b90-2c3d4e5f6a7b
VIP=198.51.100.10
VIP_MAC=fa:16:3e:de:00:01
MEMBER_MAC=fa:16:3e:de:00:02
NS_AMP=amdemo-amphora-haproxy
NS_VIPNET=amdemo-vipnet
NS_CLIENT=amdemo-client
NS_MEMBERS=amdemo-members
DIR=$(mktemp -d /tmp/amphora-demo.XXXXXX)
AGENT_PID=""

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  set +e
  step "cleaning up"
  if [ -n "$AGENT_PID" ] && kill -0 "$AGENT_PID" 2>/dev/null; then
    api DELETE "/1.0/listeners/$LB" >/dev/null 2>&1
    kill "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null
  fi
  [ -f "$DIR/members.pid" ] && kill "$(cat "$DIR/members.pid")" 2>/dev/null
  for ns in "$NS_CLIENT" "$NS_MEMBERS" "$NS_VIPNET" "$NS_AMP"; do
    ip netns del "$ns" 2>/dev/null
  done
  ip link del amdemo-vip 2>/dev/null
  ip link del amdemo-mem 2>/dev/null
  rm -rf "$DIR"
  echo "done"
}
trap cleanup EXIT INT TERM

for ns in "$NS_CLIENT" "$NS_MEMBERS" "$NS_VIPNET" "$NS_AMP"; do
  if ip netns list | grep -qw "$ns"; then
    echo "demo: namespace $ns exists (a previous demo still running?); remove it with: ip netns del $ns" >&2
    trap - EXIT; exit 1
  fi
done

step "development PKI (server certificate CN/SAN = amphora id $AMP)"
(cd "$ROOT" && "$GO" run ./internal/testutil/devpki "$DIR/pki" "$AMP")
cp "$DIR/pki/server.pem" "$DIR/server.pem"
ls "$DIR/pki"

PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
HB_PORT=$($PY -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
api() { # api METHOD PATH [curl args...]: a request as the controller makes it (mutual TLS)
  local m=$1 p=$2; shift 2
  curl -sS --fail-with-body -X "$m" --cacert "$DIR/pki/server_ca.pem" --cert "$DIR/pki/client.pem" \
    --resolve "$AMP:$PORT:127.0.0.1" "https://$AMP:$PORT$p" "$@"
}

step "network: VIP subnet 198.51.100.0/24 with a client, member subnet 198.18.2.0/24 with two members"
for ns in "$NS_VIPNET" "$NS_CLIENT" "$NS_MEMBERS"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$NS_VIPNET" link add br0 type bridge
ip -n "$NS_VIPNET" addr add 198.51.100.1/24 dev br0
ip -n "$NS_VIPNET" link set br0 up
ip link add cl0 netns "$NS_CLIENT" type veth peer name cl-p netns "$NS_VIPNET"
ip -n "$NS_VIPNET" link set cl-p master br0 up
ip -n "$NS_CLIENT" addr add 198.51.100.50/24 dev cl0
ip -n "$NS_CLIENT" link set cl0 up
# The two ports Nova hot-plugs into the amphora: NICs appear in the root
# namespace with the Neutron port's MAC; the agent finds them by MAC.
ip link add amdemo-vip address "$VIP_MAC" type veth peer name vip-p netns "$NS_VIPNET"
ip -n "$NS_VIPNET" link set vip-p master br0 up
ip link add amdemo-mem address "$MEMBER_MAC" type veth peer name mem-p netns "$NS_MEMBERS"
ip -n "$NS_MEMBERS" addr add 198.18.2.10/24 dev mem-p
ip -n "$NS_MEMBERS" addr add 198.18.2.11/24 dev mem-p
ip -n "$NS_MEMBERS" link set mem-p up
cat > "$DIR/members.cfg" <<EOF
global
    pidfile $DIR/members.pid
defaults
    mode http
    timeout client 5s
    timeout server 5s
    timeout connect 5s
frontend member1
    bind 198.18.2.10:8080
    http-request return status 418 if { path /index.html }
    http-request return status 200 content-type text/plain string "hello from member1\n"
frontend member2
    bind 198.18.2.11:8080
    http-request return status 418 if { path /index.html }
    http-request return status 200 content-type text/plain string "hello from member2\n"
EOF
ip netns exec "$NS_MEMBERS" haproxy -D -f "$DIR/members.cfg"
echo "members listening on 198.18.2.10:8080 and 198.18.2.11:8080"

step "agent configuration (as the controller renders it) and start"
mkdir -p "$DIR/lib" "$DIR/interfaces"
printf 'global\n    group nogroup\n' > "$DIR/user-group.conf"
cat > "$DIR/amphora-agent.conf" <<EOF
[DEFAULT]
debug = False

[haproxy_amphora]
base_cert_dir = $DIR/lib/certs
base_path = $DIR/lib
bind_host = 127.0.0.1
bind_port = $PORT
haproxy_cmd = /usr/sbin/haproxy

[health_manager]
controller_ip_port_list = 127.0.0.1:$HB_PORT
heartbeat_interval = 1
heartbeat_key = demo-key

[amphora_agent]
agent_server_ca = $DIR/pki/client_ca.pem
agent_server_cert = $DIR/server.pem
agent_server_network_dir = $DIR/interfaces
agent_request_read_timeout = 180
amphora_id = $AMP
agent_tls_protocol = TLSv1.2
# ours: run haproxy with the built-in supervisor (no host systemd units) in
# a namespace named for the demo
service_manager = builtin
network_namespace = $NS_AMP
haproxy_user_group_config = $DIR/user-group.conf

[controller_worker]
loadbalancer_topology = SINGLE
EOF
cat "$DIR/amphora-agent.conf"
"$BIN" --config-file "$DIR/amphora-agent.conf" >"$DIR/agent.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 1 100); do
  api GET / >/dev/null 2>&1 && break
  kill -0 "$AGENT_PID" 2>/dev/null || { cat "$DIR/agent.log"; exit 1; }
  sleep 0.1
done
echo "GET /          -> $(api GET /)"
echo "GET /1.0/info  -> $(api GET /1.0/info)"
echo "without a client certificate:"
curl -sS --cacert "$DIR/pki/server_ca.pem" --resolve "$AMP:$PORT:127.0.0.1" "https://$AMP:$PORT/1.0/info" 2>&1 | sed 's/^/    /' || true

step "plug the VIP port and the member port (found by MAC, moved into $NS_AMP)"
api POST "/1.0/plug/vip/$VIP" -H 'Content-Type: application/json' -d "{
  \"subnet_cidr\": \"198.51.100.0/24\", \"gateway\": \"198.51.100.1\",
  \"mac_address\": \"$VIP_MAC\", \"vrrp_ip\": \"198.51.100.5\", \"mtu\": 1500,
  \"host_routes\": [], \"additional_vips\": [], \"is_sriov\": false}"; echo
api POST /1.0/plug/network -H 'Content-Type: application/json' -d "{
  \"mac_address\": \"$MEMBER_MAC\", \"mtu\": 1500,
  \"fixed_ips\": [{\"ip_address\": \"198.18.2.5\", \"subnet_cidr\": \"198.18.2.0/24\", \"host_routes\": []}]}"; echo
ip -n "$NS_AMP" -br addr

step "render a load balancer with Octavia's templater, upload it, start it"
cat > "$DIR/spec.json" <<EOF
{"amphora_id": "$AMP", "lb_id": "$LB", "base_path": "$DIR/lib", "cert_dir": "$DIR/lib/certs",
 "vip": "$VIP",
 "listeners": [{"id": "$LISTENER", "protocol": "HTTP", "port": 80, "pool_id": "$POOL",
   "monitor": true, "hm_delay": 1, "hm_timeout": 1,
   "members": [{"id": "$M1", "address": "198.18.2.10", "port": 8080},
               {"id": "$M2", "address": "198.18.2.11", "port": 8080}]},
  {"id": "$PROM_LISTENER", "protocol": "PROMETHEUS", "port": 9100}]}
EOF
$PY "$ROOT/test/interop/render_haproxy.py" < "$DIR/spec.json" > "$DIR/haproxy.cfg"
echo "an invalid config is refused and changes nothing:"
printf 'frontend broken\n    bind %s:80\n    no-such-keyword\n' "$VIP" > "$DIR/bad.cfg"
{ api PUT "/1.0/loadbalancer/$AMP/$LB/haproxy" --data-binary @"$DIR/bad.cfg" 2>&1 || true; } | head -c 400 | sed 's/^/    /'; echo
echo "the real one:"
api PUT "/1.0/loadbalancer/$AMP/$LB/haproxy" --data-binary @"$DIR/haproxy.cfg" -D - -o "$DIR/put.out" | grep -i '^etag' | sed 's/^/    /'
cat "$DIR/put.out"; echo
api PUT "/1.0/loadbalancer/$LB/start"; echo
api GET /1.0/listeners; echo

step "traffic from the client namespace to the VIP"
for _ in $(seq 1 30); do   # health checks need a moment to mark members UP
  ip netns exec "$NS_CLIENT" curl -s -m 1 "http://$VIP/" >/dev/null 2>&1 && break
  sleep 0.2
done
for _ in $(seq 1 10); do
  ip netns exec "$NS_CLIENT" curl -s -m 2 "http://$VIP/"
done | sort | uniq -c | sed 's/^/    /'

step "hitless reload while the client keeps asking"
(for _ in $(seq 1 200); do ip netns exec "$NS_CLIENT" curl -s -m 2 -o /dev/null -w '%{http_code}\n' "http://$VIP/"; done) > "$DIR/codes" &
LOAD=$!
for _ in 1 2 3 4 5; do api PUT "/1.0/loadbalancer/$LB/reload" >/dev/null; sleep 0.3; done
wait $LOAD
awk '{n[$1]++} END {for (c in n) printf "    %d requests answered HTTP %s during 5 reloads\n", n[c], c}' "$DIR/codes"

step "one heartbeat, received on UDP 127.0.0.1:$HB_PORT and decoded with Octavia's status_message.unwrap_envelope"
$PY - "$HB_PORT" <<'EOF'
import json, socket, sys, time, warnings
warnings.filterwarnings('ignore')
from octavia.amphorae.backends.health_daemon import status_message
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('127.0.0.1', int(sys.argv[1])))
s.settimeout(10)
deadline = time.time() + 15
while time.time() < deadline:
    data, _ = s.recvfrom(65535)
    msg = status_message.unwrap_envelope(data, 'demo-key')
    if msg.get('pools'):
        print(json.dumps(msg, indent=2))
        break
EOF

step "PROMETHEUS listener: Octavia metrics from the proxy the agent runs in $NS_AMP"
for _ in $(seq 1 50); do
  ip netns exec "$NS_CLIENT" curl -sf -m 2 -o "$DIR/metrics.txt" "http://$VIP:9100/metrics" && break
  sleep 0.2
done
echo "GET http://$VIP:9100/metrics from the client: $(grep -vc '^#' "$DIR/metrics.txt") series, for example"
grep -E "^octavia_listener_http_requests_total\{listener=\"$LISTENER\"\}|^octavia_member_status\{pool=\"$POOL:$LISTENER\",member=\"$M1\",state=\"UP\"\}|^octavia_loadbalancer_cpu " \
  "$DIR/metrics.txt" | sed 's/^/    /'

step "what an operator sees on the amphora: amphora-agent status"
"$BIN" --config-file "$DIR/amphora-agent.conf" status 2>/dev/null | sed -n '1,/^Heartbeat/p' | sed '$d'
echo "(and 'amphora-agent heartbeat --print' shows the next heartbeat as indented JSON)"

step "agent log (one structured line per request)"
tail -n 8 "$DIR/agent.log"
