#!/usr/bin/python3
"""Time the reference agent's heartbeat build in-process (make bench).

Loads Octavia's own health daemon code (python3-octavia, run with Debian's
/usr/bin/python3), points its configuration at BASE_PATH, which holds one
load balancer laid out as on an amphora (BASE/<lb>/haproxy.cfg,
BASE/<lb>/<lb>.pid of a running haproxy, BASE/<lb>.sock its stats
socket), and times build_stats_message() followed by wrap_envelope()
(what the health sender does before its sendto) in ROUNDS rounds of at
least MIN_SECONDS each, measuring the CPU time of the process
(time.process_time: waiting for haproxy excluded) and the wall time.

Prints one JSON object: {"listeners": L, "pools": P, "members": M,
"json_bytes": J, "datagram_bytes": D, "round_cpu_ns_per_op": [...],
"round_ns_per_op": [...], "round_ops": [...]}.

usage: ref_heartbeat.py BASE_PATH AMPHORA_ID KEY ROUNDS MIN_SECONDS
"""
import json
import sys
import time
import warnings

warnings.filterwarnings('ignore')

from oslo_config import cfg  # noqa: E402

from octavia.common import config as _octavia_config  # noqa: E402,F401
from octavia.amphorae.backends.health_daemon import health_daemon  # noqa
from octavia.amphorae.backends.health_daemon import status_message  # noqa

CONF = cfg.CONF


def main(argv):
    if len(argv) != 6:
        sys.stderr.write(__doc__)
        return 2
    base, amphora_id, key = argv[1], argv[2], argv[3]
    rounds, min_seconds = int(argv[4]), float(argv[5])
    CONF([], project='octavia', default_config_files=[])
    CONF.set_override('base_path', base, group='haproxy_amphora')
    CONF.set_override('amphora_id', amphora_id, group='amphora_agent')
    CONF.set_override('heartbeat_key', key, group='health_manager')

    # One untimed build: opens the counters file, checks what is reported.
    msg = health_daemon.build_stats_message()
    envelope = status_message.wrap_envelope(msg, key)
    out = {
        'listeners': len(msg['listeners']),
        'pools': len(msg['pools']),
        'members': sum(len(p['members']) for p in msg['pools'].values()),
        'json_bytes': len(json.dumps(msg)),
        'datagram_bytes': len(envelope),
        'round_cpu_ns_per_op': [],
        'round_ns_per_op': [],
        'round_ops': [],
    }
    for _ in range(rounds):
        ops = 0
        t0, c0 = time.perf_counter_ns(), time.process_time_ns()
        while True:
            msg = health_daemon.build_stats_message()
            status_message.wrap_envelope(msg, key)
            ops += 1
            elapsed = time.perf_counter_ns() - t0
            if elapsed >= min_seconds * 1e9:
                break
        out['round_cpu_ns_per_op'].append((time.process_time_ns() - c0) / ops)
        out['round_ns_per_op'].append(elapsed / ops)
        out['round_ops'].append(ops)
    json.dump(out, sys.stdout)
    sys.stdout.write('\n')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
