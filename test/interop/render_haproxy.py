#!/usr/bin/python3
"""Render an haproxy configuration with the Octavia controller's own
combined-listeners templater and sample data models (python3-octavia).

Reads a JSON spec on stdin and prints the configuration:
  {"amphora_id": "...", "lb_id": "...", "base_path": "...", "cert_dir": "...",
   "vip": "198.51.100.10", "haproxy_versions": ["2", "6"],
   "topology": "SINGLE",
   "listeners": [{"id": "...", "protocol": "HTTP", "port": 80,
                  "connection_limit": 2000, "pool_id": "...",
                  "monitor": true, "hm_delay": 1, "hm_timeout": 1,
                  "members": [{"id": "...", "address": "...", "port": 8080,
                               "enabled": true, "weight": 1}]}]}
protocol is HTTP, TCP, TERMINATED_HTTPS (the TLS listener's crt-list is
<cert_dir>/<lb_id>/<listener id>.pem, as the controller uploads it) or
PROMETHEUS (no pool: the templater adds the internal exporter frontend and
the backend to the Prometheus proxy).
Run with Debian's /usr/bin/python3.
"""
import json
import sys
import types
import warnings

warnings.filterwarnings('ignore')

from oslo_config import cfg  # noqa: E402

from octavia.common import config as _octavia_config  # noqa: E402,F401
from octavia.common import constants  # noqa: E402
from octavia.common.jinja.haproxy.combined_listeners import jinja_cfg  # noqa
from octavia.tests.unit.common.sample_configs import (  # noqa: E402
    sample_configs_combined as sc)

CONF = cfg.CONF


def remap(obj, mapping, depth=0):
    """Replace string leaves through namedtuples, lists and dicts."""
    if depth > 12:
        return obj
    if isinstance(obj, str):
        return mapping.get(obj, obj)
    if isinstance(obj, tuple) and hasattr(obj, '_fields'):
        return obj._replace(**{f: remap(getattr(obj, f), mapping, depth + 1)
                               for f in obj._fields})
    if isinstance(obj, list):
        return [remap(x, mapping, depth + 1) for x in obj]
    if isinstance(obj, dict):
        return {remap(k, mapping, depth + 1): remap(v, mapping, depth + 1)
                for k, v in obj.items()}
    return obj


def listener(spec, l, topology):
    proto = l.get('protocol', 'HTTP')
    tls = proto == 'TERMINATED_HTTPS'
    if proto == 'PROMETHEUS':
        lst = sc.sample_listener_tuple(
            proto=proto, alloc_default_pool=False, include_pools=False,
            topology=topology, connection_limit=l.get('connection_limit',
                                                      2000))
        lst = lst._replace(id=l['id'], protocol_port=l['port'], pools=[],
                           l7policies=[])
        return remap(lst, {'sample_loadbalancer_id_1': spec['lb_id'],
                           '10.0.0.2': spec['vip']})
    lst = sc.sample_listener_tuple(
        proto=proto, monitor=l.get('monitor', True), tls=tls, sni=False,
        topology=topology, persistence=False,
        connection_limit=l.get('connection_limit', 2000))
    pool = lst.default_pool
    hm = pool.health_monitor
    if hm is not None:
        hm = hm._replace(delay=l.get('hm_delay', 1),
                         timeout=l.get('hm_timeout', 1),
                         fall_threshold=l.get('hm_fall', 2),
                         rise_threshold=l.get('hm_rise', 1))
    members = []
    for m in l.get('members', []):
        t = sc.sample_member_tuple(m['id'], m['address'],
                                   enabled=m.get('enabled', True))
        members.append(t._replace(protocol_port=m['port'],
                                  weight=m.get('weight', 1)))
    pool = pool._replace(id=l['pool_id'], members=members,
                         health_monitor=hm)
    lst = lst._replace(id=l['id'], protocol_port=l['port'],
                       default_pool=pool, pools=[pool], l7policies=[])
    return remap(lst, {'sample_loadbalancer_id_1': spec['lb_id'],
                       '10.0.0.2': spec['vip']})


def main():
    spec = json.load(sys.stdin)
    CONF([], project='octavia', default_config_files=[])
    CONF.set_override('base_path', spec['base_path'], group='haproxy_amphora')
    CONF.set_override('base_cert_dir', spec['cert_dir'],
                      group='haproxy_amphora')
    topology = spec.get('topology', 'SINGLE')
    listeners = [listener(spec, l, topology) for l in spec['listeners']]
    amp = types.SimpleNamespace(
        id=spec['amphora_id'], status=constants.AMPHORA_ALLOCATED,
        lb_network_ip='127.0.0.1', vrrp_ip=spec.get('vrrp_ip'), ha_ip=None,
        vrrp_port_id=None, ha_port_id=None, role=constants.ROLE_STANDALONE,
        vrrp_interface=None, vrrp_id=1, vrrp_priority=100)
    t = jinja_cfg.JinjaTemplater(base_amp_path=spec['base_path'],
                                 base_crt_dir=spec['cert_dir'])
    sys.stdout.write(t.build_config(
        host_amphora=amp, listeners=listeners, tls_certs={},
        haproxy_versions=tuple(spec.get('haproxy_versions', ['2', '6']))))


if __name__ == '__main__':
    main()
