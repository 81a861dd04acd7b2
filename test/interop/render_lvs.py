#!/usr/bin/python3
"""Render a keepalived LVS (UDP/SCTP listener) configuration with the
Octavia controller's own templater (octavia.common.jinja.lvs.jinja_cfg),
the text the controller uploads with PUT /1.0/listeners/<amp>/<id>/udp_listener.

Reads a JSON spec on stdin and prints the configuration (or a JSON list of
specs, and prints a JSON list of configurations):
  {"lb_id": "...", "base_path": "/var/lib/octavia",
   "lb_enabled": true,                               (optional, default true)
   "vips": ["198.51.100.10", "2001:db8::10"],        (first = the VIP, the rest
                                                      are additional VIPs)
   "listener": {"id": "...", "protocol": "UDP",      (UDP or SCTP)
                "port": 53, "enabled": true, "connection_limit": 1000,
                "pool": {                            (null: no default pool)
                  "id": "...", "lb_algorithm": "ROUND_ROBIN", "enabled": true,
                  "session_persistence": {"type": "SOURCE_IP",
                      "persistence_timeout": 60,
                      "persistence_granularity": "255.255.255.0"},  (or null)
                  "monitor": {"id": "...", "type": "UDP-CONNECT",   (or null;
                              "delay": 5, "timeout": 3,     SCTP, TCP, HTTP,
                              "fall": 3, "rise": 2,         UDP-CONNECT)
                              "enabled": true, "url_path": "/",
                              "http_method": "GET", "expected_codes": "200"},
                  "members": [{"id": "...", "address": "...", "port": 53,
                               "weight": 1, "enabled": true,
                               "monitor_address": null,
                               "monitor_port": null}]}}}
The UDP-CONNECT check script path follows base_path, as the controller
renders it ([haproxy_amphora] base_path). Run with Debian's /usr/bin/python3.
"""
import json
import sys
import types
import warnings

warnings.filterwarnings('ignore')

from oslo_config import cfg  # noqa: E402

from octavia.common import config as _octavia_config  # noqa: E402,F401
from octavia.common import constants  # noqa: E402
from octavia.common.jinja.lvs import jinja_cfg  # noqa: E402

CONF = cfg.CONF
NS = types.SimpleNamespace


def member(m):
    return NS(id=m['id'], ip_address=m['address'],
              protocol_port=m['port'], weight=m.get('weight', 1),
              enabled=m.get('enabled', True),
              monitor_address=m.get('monitor_address'),
              monitor_port=m.get('monitor_port'),
              provisioning_status=constants.ACTIVE)


def monitor(h):
    if not h:
        return None
    return NS(id=h['id'], type=h['type'], delay=h.get('delay', 5),
              timeout=h.get('timeout', 3), enabled=h.get('enabled', True),
              fall_threshold=h.get('fall', 3), rise_threshold=h.get('rise', 2),
              url_path=h.get('url_path', '/'),
              http_method=h.get('http_method', 'GET'),
              expected_codes=h.get('expected_codes', '200'),
              provisioning_status=constants.ACTIVE)


def pool(p, protocol):
    if not p:
        return None
    sp = p.get('session_persistence')
    return NS(id=p['id'], protocol=protocol,
              lb_algorithm=p.get('lb_algorithm', 'ROUND_ROBIN'),
              enabled=p.get('enabled', True),
              members=[member(m) for m in p.get('members', [])],
              health_monitor=monitor(p.get('monitor')),
              session_persistence=NS(
                  type=sp['type'],
                  persistence_timeout=sp.get('persistence_timeout'),
                  persistence_granularity=sp.get('persistence_granularity'))
              if sp else None,
              provisioning_status=constants.ACTIVE)


def main():
    spec = json.load(sys.stdin)
    CONF([], project='octavia', default_config_files=[])
    if isinstance(spec, list):
        json.dump([render(s) for s in spec], sys.stdout)
    else:
        sys.stdout.write(render(spec))


def render(spec):
    CONF.set_override('base_path', spec['base_path'], group='haproxy_amphora')
    vips = spec['vips']
    lb = NS(id=spec['lb_id'], enabled=spec.get('lb_enabled', True),
            vip=NS(ip_address=vips[0]),
            additional_vips=[NS(ip_address=v) for v in vips[1:]])
    ls = spec['listener']
    listener = NS(id=ls['id'], protocol=ls.get('protocol', 'UDP'),
                  protocol_port=ls['port'], enabled=ls.get('enabled', True),
                  connection_limit=ls.get('connection_limit', -1),
                  default_pool=pool(ls.get('pool'),
                                    ls.get('protocol', 'UDP')),
                  load_balancer=lb)
    return jinja_cfg.LvsJinjaTemplater(
        base_amp_path=spec['base_path']).build_config(listener)


if __name__ == '__main__':
    main()
