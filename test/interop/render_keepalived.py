#!/usr/bin/python3
"""Render the keepalived (VRRP) configurations of an ACTIVE_STANDBY pair
with the Octavia controller's own templater
(octavia.amphorae.drivers.keepalived.jinja.jinja_cfg, unicast peers).

Reads a JSON spec on stdin:
  {"lb_id": "...", "vip": "198.51.100.100", "vip_cidr": "198.51.100.0/24",
   "gateway": "198.51.100.1",            (null: no default route)
   "group_name": "...", "auth_pass": "...",   (optional)
   "keepalived_vrrp": {"vrrp_check_interval": 5, ...},   (optional CONF
                                         overrides of [keepalived_vrrp])
   "amphorae": [{"id": "...", "base_path": "...", "vrrp_ip": "198.51.100.11",
                 "vrrp_interface": "eth1", "role": "MASTER",
                 "priority": 100}, ...]}
and prints a JSON object mapping each amphora id to its configuration
(the vrrp_script path follows that amphora's base_path, as the controller
renders it for an amphora whose agent uses that base_path). The other
amphorae of the list are the unicast peers. Run with Debian's
/usr/bin/python3.
"""
import json
import sys
import types
import warnings

warnings.filterwarnings('ignore')

from oslo_config import cfg  # noqa: E402

from octavia.common import config as _octavia_config  # noqa: E402,F401
from octavia.common import constants  # noqa: E402
from octavia.amphorae.drivers.keepalived.jinja import jinja_cfg  # noqa
from octavia.network import data_models as n_data_models  # noqa: E402

CONF = cfg.CONF


def main():
    spec = json.load(sys.stdin)
    CONF([], project='octavia', default_config_files=[])
    for name, value in spec.get('keepalived_vrrp', {}).items():
        CONF.set_override(name, value, group='keepalived_vrrp')
    amps = [types.SimpleNamespace(
        id=a['id'], status=constants.AMPHORA_ALLOCATED,
        vrrp_ip=a['vrrp_ip'], role=a.get('role', constants.ROLE_BACKUP),
        vrrp_interface=a.get('vrrp_interface', 'eth1'),
        vrrp_id=a.get('vrrp_id', 1), vrrp_priority=a['priority'])
        for a in spec['amphorae']]
    lb = types.SimpleNamespace(
        id=spec['lb_id'], amphorae=amps,
        vip=types.SimpleNamespace(ip_address=spec['vip']),
        vrrp_group=types.SimpleNamespace(
            vrrp_group_name=spec.get('group_name',
                                     spec['lb_id'].replace('-', '')),
            vrrp_auth_type=constants.VRRP_AUTH_DEFAULT,
            vrrp_auth_pass=spec.get('auth_pass', 'vrrppass'),
            advert_int=CONF.keepalived_vrrp.vrrp_advert_int))
    subnet = n_data_models.Subnet(cidr=spec['vip_cidr'],
                                  gateway_ip=spec.get('gateway'),
                                  host_routes=[])
    net_cfg = n_data_models.AmphoraNetworkConfig(vip_subnet=subnet)
    out = {}
    for a, amp in zip(spec['amphorae'], amps):
        CONF.set_override('base_path', a['base_path'],
                          group='haproxy_amphora')
        out[amp.id] = jinja_cfg.KeepalivedJinjaTemplater(
        ).build_keepalived_config(lb, amp, net_cfg)
    json.dump(out, sys.stdout)


if __name__ == '__main__':
    main()
