#!/usr/bin/python3
"""Regenerate testdata/golden/*.json with the upstream Octavia code.

Usage: /usr/bin/python3 gen_golden.py OCTAVIA_SRC
OCTAVIA_SRC is a checkout of upstream Octavia (the directory that contains
the "octavia" package). Each case of golden_cases.json is rendered the way
the upstream agent's plug code writes interface files.
"""
import json
import os
import sys
import tempfile

sys.path.insert(0, sys.argv[1])

from oslo_config import cfg  # noqa: E402

from octavia.amphorae.backends.agent.api_server import plug  # noqa: E402
from octavia.amphorae.backends.utils import interface_file  # noqa: E402
from octavia.common import config  # noqa: E402,F401

CONF = cfg.CONF
here = os.path.dirname(os.path.abspath(__file__))
out_dir = os.path.join(here, 'golden')
os.makedirs(out_dir, exist_ok=True)
CONF([], project='octavia')
p = plug.Plug(None)

for case in json.load(open(os.path.join(here, 'golden_cases.json'))):
    tmp = tempfile.mkdtemp()
    CONF.set_override('agent_server_network_dir', tmp, group='amphora_agent')
    name, body = case['ifname'], case.get('body', {})
    topology = case.get('topology', 'SINGLE')
    if case['kind'] == 'lo':
        f = interface_file.InterfaceFile(
            name='lo', if_type='lo',
            addresses=[{'address': '127.0.0.1', 'prefixlen': 8}])
    elif case['kind'] == 'vip':
        vips = [{'ip_address': case['vip'],
                 'subnet_cidr': body['subnet_cidr'],
                 'gateway': body['gateway'],
                 'host_routes': body.get('host_routes', ())}
                ] + list(body.get('additional_vips', ()))
        rendered = p.render_vips(vips)
        vrrp = p.build_vrrp_info(body.get('vrrp_ip'), body['subnet_cidr'],
                                 body['gateway'], body.get('host_routes', ()))
        f = interface_file.VIPInterfaceFile(
            name=name, mtu=body.get('mtu'), vips=rendered, vrrp_info=vrrp,
            fixed_ips=None, topology=topology,
            is_sriov=body.get('is_sriov', False))
    else:
        info = body.get('vip_net_info')
        if info:
            vips = [{'ip_address': info['vip'],
                     'subnet_cidr': info['subnet_cidr'],
                     'gateway': info['gateway'],
                     'host_routes': info.get('host_routes', [])}
                    ] + info.get('additional_vips', [])
            rendered = p.render_vips(vips)
            vrrp = p.build_vrrp_info(info.get('vrrp_ip'), info['subnet_cidr'],
                                     info['gateway'],
                                     info.get('host_routes', []))
            f = interface_file.VIPInterfaceFile(
                name=name, mtu=body.get('mtu'), vips=rendered,
                vrrp_info=vrrp, fixed_ips=body.get('fixed_ips'),
                topology=topology, is_sriov=body.get('is_sriov', False))
        else:
            f = interface_file.PortInterfaceFile(
                name=name, mtu=body.get('mtu'),
                fixed_ips=body.get('fixed_ips'),
                is_sriov=body.get('is_sriov', False))
    f.write()
    with open(os.path.join(tmp, name + '.json')) as src:
        data = src.read()
    with open(os.path.join(out_dir, case['name'] + '.json'), 'w') as dst:
        dst.write(data)
    print(case['name'], len(data))
