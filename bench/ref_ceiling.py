#!/usr/bin/python3
"""The reference agent's member ceiling (make bench).

Reads from stdin a heartbeat message in the order its listeners and pools
must be taken ({"id": ..., "key": ..., "listeners": [[id, entry], ...],
"pools": [[key, entry], ...]}), and finds by bisection the largest number
of pools k whose message (the first k listeners and pools) Octavia's own
status_message.wrap_envelope turns into a datagram of at most 65,507
bytes, the most an IPv4 UDP datagram carries: above it the reference's
sendto fails and nothing is sent.

Prints {"pools": k, "datagram_bytes": size at k}.
"""
import json
import sys
import warnings

warnings.filterwarnings('ignore')

from octavia.amphorae.backends.health_daemon import status_message  # noqa: E402

LIMIT = 65507


def main():
    req = json.load(sys.stdin)
    key = req['key']

    def size(k):
        msg = {'id': req['id'], 'seq': 0,
               'listeners': dict(req['listeners'][:k]),
               'pools': dict(req['pools'][:k]), 'ver': 3}
        return len(status_message.wrap_envelope(msg, key))

    lo, hi = 0, len(req['pools'])
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if size(mid) <= LIMIT:
            lo = mid
        else:
            hi = mid - 1
    json.dump({'pools': lo, 'datagram_bytes': size(lo)}, sys.stdout)
    sys.stdout.write('\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
